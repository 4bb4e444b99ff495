"""Masked autoencoders: build (scratch presets or pretrained weights), train, and evaluate with fixed masks.

Pixels travel one way: uint8 -> [0, 1] (`to_unit`) -> the model's per-channel normalisation
(`Normalizer`, saved with the model as its image-processor config) -> the model; predictions come
back through `Normalizer.to_unit` and every metric is computed in [0, 1] pixel space. The
normalisation is applied exactly once, and which one is chosen by `normalizer_for`: fit on the real
training images for a scratch model, the pretrained model's own (its preprocessor_config.json) for
`mae.init` = a hub id or a folder.

Pretrained weights are never downloaded: `mae.init` must be a folder or already in the local Hugging
Face cache, and `check_init` says so in one line, without importing transformers, before anything is
built. A pretrained model whose native side differs from data.image_size has its fixed sin-cos
position embeddings resized once, in 2-D, when it is loaded (`fit_to_size`), so it is saved and
reloaded as a model of the study's size.

The fixed mask: HF's ViTMAE keeps the patches with the smallest `noise` values. `fixed_noise` derives
each test image's noise from its id and the evaluation seed alone, so every model, whatever its
training, is asked to fill in the very same patches of the very same image. The noise has one entry
per patch: (data.image_size / patch_size(cfg))**2, with the pretrained model's patch size when there
is one.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from genaug.config import MAEConfig
from genaug.data.images import to_unit
from genaug.engine import Trainer, warmup_constant, warmup_cosine
from genaug.errors import UserError

# Encoder / decoder widths. `base` is ViT-Base with the MAE paper's 8-block, 512-wide decoder.
PRESETS: dict[str, dict[str, int]] = {
    "micro": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                  decoder_intermediate_size=64),
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                 decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
                 decoder_intermediate_size=256),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                  decoder_hidden_size=256, decoder_num_hidden_layers=4, decoder_num_attention_heads=8,
                  decoder_intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 decoder_hidden_size=512, decoder_num_hidden_layers=8, decoder_num_attention_heads=16,
                 decoder_intermediate_size=2048),
}

SCRATCH = "scratch"
# What ViTImageProcessor (and facebook/vit-mae-base's preprocessor_config.json) uses.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")  # genaug never unpickles a .bin
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# ------------------------------------------------------------------------------------ pretrained weights


def _use_scratch(init: str) -> str:
    return f'download it with `hf download {init}` (needs the network once) or set mae.init = "scratch"'


def locate(init: str) -> Path:
    """The folder holding a pretrained `mae.init`'s config.json and weights. Cheap: no transformers.

    A folder that exists is used as given; anything else is a Hugging Face hub id that must already be
    in the local cache (its snapshot folder is returned, so loading never touches the network).
    Raises a one-line UserError naming mae.init when the model is not on this machine.
    """
    folder = Path(init).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserError(f"mae.init = '{init}' is a folder without config.json; point it at a folder written "
                            f'by save_pretrained (a ViT-MAE), or set mae.init = "scratch"')
    else:
        if not _REPO_ID.match(init) or init.count("/") > 1:
            raise UserError(f"mae.init = '{init}' is no folder on this machine (nor a hub id); give a folder "
                            f'written by save_pretrained, a hub id such as facebook/vit-mae-base, or "scratch"')
        from huggingface_hub import constants, try_to_load_from_cache

        try:
            found = try_to_load_from_cache(init, "config.json")
        except ValueError:  # huggingface_hub's HFValidationError: not a valid repo id after all
            found = None
        if not isinstance(found, str):  # None, or the cache's "known not to exist" marker
            raise UserError(f"mae.init = '{init}' is not on this machine (no such folder, and not in the Hugging "
                            f"Face cache {constants.HF_HUB_CACHE}); {_use_scratch(init)}")
        folder = Path(found).parent
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        if any((folder / name).is_file() for name in PICKLED_WEIGHTS):
            raise UserError(f"mae.init = '{init}' has only {PICKLED_WEIGHTS[0]} (a pickle) in {folder}; genaug loads "
                            "safetensors only: save the model again with save_pretrained (safetensors is its "
                            "default) or download the hub's model.safetensors")
        raise UserError(f"mae.init = '{init}' has a config.json but no weights ({WEIGHT_FILES[0]}) in {folder}; "
                        f"{_use_scratch(init)}")
    return folder


def pretrained_config(init: str) -> dict:
    """The pretrained model's config.json, as a dict (cheap: no transformers)."""
    path = locate(init) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"mae.init = '{init}': cannot read {path} ({err}); download it again or fix the file")
    if config.get("model_type") != "vit_mae":
        raise UserError(f"mae.init = '{init}' is a {config.get('model_type')!r} model, not a ViT-MAE "
                        f"(model_type 'vit_mae'); use a ViTMAEForPreTraining model such as facebook/vit-mae-base")
    return config


def patch_size(cfg: MAEConfig) -> int:
    """The patch side the study's MAEs use: mae.patch_size from scratch, the model's own when pretrained."""
    return cfg.patch_size if cfg.init == SCRATCH else int(pretrained_config(cfg.init).get("patch_size", 16))


def check_init(cfg: MAEConfig, image_size: int, channels: int) -> None:
    """Raise a one-line UserError if `cfg` cannot make an MAE for (channels, image_size, image_size) images.

    Cheap (reads JSON, never imports transformers): call it when validating a config, before any stage
    runs. Checks that a pretrained model is on this machine, takes `channels` channels and a patch size
    that divides image_size; for every model, that the mask leaves at least one patch visible.
    """
    patch = cfg.patch_size
    if cfg.init != SCRATCH:
        config = pretrained_config(cfg.init)
        patch, wanted = int(config.get("patch_size", 16)), int(config.get("num_channels", 3))
        if wanted != channels:
            if wanted == 3 and channels == 1:
                fix = 'set data.thermal_channels = 3 (the thermal channel repeated three times) or mae.init = "scratch"'
            elif wanted == 1:
                fix = 'it fits only thermal images with data.thermal_channels = 1; use a 3-channel model or "scratch"'
            else:
                fix = f'use a {channels}-channel model or mae.init = "scratch"'
            raise UserError(f"mae.init = '{cfg.init}' takes {wanted}-channel images but these images have "
                            f"{channels}; {fix}")
        if image_size % patch:
            native = config.get("image_size", 224)
            raise UserError(f"data.image_size = {image_size} is not a multiple of the patch size {patch} of "
                            f"mae.init = '{cfg.init}' (its native size is {native}); choose a multiple of {patch}")
    patches = (image_size // patch) ** 2
    if int(patches * (1 - cfg.mask_ratio)) < 1:
        raise UserError(f"data.image_size = {image_size} makes {patches} patch(es) of {patch} pixels, and "
                        f"mae.mask_ratio = {cfg.mask_ratio} hides them all; use larger images or a lower mask_ratio")


# ---------------------------------------------------------------------------------------- normalisation


class Normalizer:
    """Per-channel (x - mean) / std on [0, 1] images; stored as the model's ViTImageProcessor config.

    `source` says where mean and std came from (for the run's manifest and report).
    """

    def __init__(self, mean: list[float], std: list[float], source: str = ""):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._copies: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.source = source

    @classmethod
    def fit(cls, images: torch.Tensor) -> Normalizer:
        """From a uint8 (N, C, H, W) set."""
        unit = to_unit(images)
        return cls(unit.mean(dim=(0, 2, 3)).tolist(), unit.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist(),
                   f"fit on {len(images)} real training images")

    @classmethod
    def from_pretrained(cls, init: str) -> Normalizer:
        """A pretrained model's own normalisation, from its preprocessor_config.json (no transformers).

        The processor maps uint8 x to (x * rescale_factor - mean) / std; on our [0, 1] input u = x / 255
        that is (u - mean') / std' with mean' = mean / (255 * rescale_factor), std' likewise, which is the
        processor's mean and std for the usual rescale_factor = 1/255. No preprocessor_config.json: a
        3-channel model gets ImageNet's mean and std (what ViTImageProcessor defaults to), and `source`
        says so.
        """
        folder = locate(init)
        channels = int(pretrained_config(init).get("num_channels", 3))
        path = folder / "preprocessor_config.json"
        if not path.is_file():
            if channels != 3:
                raise UserError(f"mae.init = '{init}' has no preprocessor_config.json to say how its "
                                f"{channels}-channel inputs are normalised; save a ViTImageProcessor "
                                "(image_mean, image_std) beside it")
            return cls(IMAGENET_MEAN, IMAGENET_STD, f"ImageNet mean/std: {init} has no preprocessor_config.json")
        processor = json.loads(path.read_text())
        if not processor.get("do_normalize", True):
            mean, std = [0.0] * channels, [1.0] * channels
        else:
            mean, std = processor.get("image_mean", IMAGENET_MEAN), processor.get("image_std", IMAGENET_STD)
            mean = mean if isinstance(mean, list) else [mean] * channels
            std = std if isinstance(std, list) else [std] * channels
        scale = 255 * (processor.get("rescale_factor", 1 / 255) if processor.get("do_rescale", True) else 1.0)
        if len(mean) != channels or len(std) != channels:
            raise UserError(f"mae.init = '{init}': its preprocessor_config.json has {len(mean)} channel means for a "
                            f"{channels}-channel model; fix image_mean / image_std there")
        return cls([m / scale for m in mean], [s / scale for s in std], f"preprocessor_config.json of {init}")

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Copied to each device once: a copy from pageable host memory in every training step would
        # make the host wait for the GPU's queue to drain, every step.
        if device not in self._copies:
            self._copies[device] = (self.mean.to(device), self.std.to(device))
        return self._copies[device]

    def to_model(self, unit: torch.Tensor) -> torch.Tensor:
        mean, std = self._on(unit.device)
        return (unit - mean) / std

    def to_unit(self, normalized: torch.Tensor) -> torch.Tensor:
        mean, std = self._on(normalized.device)
        return normalized * std + mean

    def save(self, folder: Path, image_size: int) -> None:
        # The PIL flavour of ViTImageProcessor: the default one needs torchvision (and warns without
        # it); both write the same preprocessor_config.json ("ViTImageProcessor").
        from transformers import ViTImageProcessorPil

        from PIL import Image

        # For users of the saved model: genaug itself centre-crops (data.resize) before this resize.
        ViTImageProcessorPil(
            do_resize=True, size={"height": image_size, "width": image_size},
            resample=Image.Resampling.BICUBIC,
            do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
            image_mean=self.mean.flatten().tolist(), image_std=self.std.flatten().tolist(),
        ).save_pretrained(folder)

    @classmethod
    def load(cls, folder: Path) -> Normalizer:
        from transformers import ViTImageProcessorPil

        processor = ViTImageProcessorPil.from_pretrained(folder)
        return cls(list(processor.image_mean), list(processor.image_std), f"preprocessor_config.json of {folder}")


def normalizer_for(cfg: MAEConfig, real_images: torch.Tensor) -> Normalizer:
    """The one normalisation the MAE sees, for uint8 (N, C, S, S) real training images.

    Scratch: per-channel mean/std fit on the real training images (identical for every condition of a
    modality, so conditions differ in their data and nothing else). Pretrained: the model's own
    image-processor normalisation, never refit, since its weights were learned on it.
    """
    if cfg.init == SCRATCH:
        return Normalizer.fit(real_images)
    check_init(cfg, real_images.shape[-1], real_images.shape[1])
    return Normalizer.from_pretrained(cfg.init)


# ---------------------------------------------------------------------------------------------- models


def build(cfg: MAEConfig, image_size: int, channels: int):
    """A ViTMAEForPreTraining for (channels, image_size, image_size) inputs, as `cfg.init` says.

    Scratch: the preset's architecture with the MAE paper's sin-cos positions. Pretrained: the weights
    as stored (loaded from this machine only), position embeddings resized to image_size when its
    native size differs; either way mask_ratio and norm_pix_loss come from `cfg`.
    """
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    if cfg.init == SCRATCH:
        config = ViTMAEConfig(image_size=image_size, patch_size=cfg.patch_size, num_channels=channels,
                              mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss, attn_implementation="sdpa",
                              **PRESETS[cfg.preset])
        model = ViTMAEForPreTraining(config)
        restore_sincos_init(model)
        return model
    check_init(cfg, image_size, channels)
    from safetensors import SafetensorError

    try:
        model = ViTMAEForPreTraining.from_pretrained(
            locate(cfg.init), local_files_only=True, use_safetensors=True, dtype=torch.float32,
            attn_implementation="sdpa", mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss)
    except (OSError, ValueError, SafetensorError) as e:
        reason = str(e).splitlines()[0][:120] if str(e) else "unreadable"
        raise UserError(f"mae.init = '{cfg.init}': its weights do not load ({e.__class__.__name__}: {reason}); "
                        "save or download them again") from None
    fit_to_size(model, image_size)
    return model


def restore_sincos_init(model) -> None:
    """Give a freshly built ViTMAE the fixed sin-cos position embeddings of the MAE paper.

    transformers 5.x builds scratch ViTMAEs with all-zero position embeddings: the encoder's
    `initialize_weights` is skipped once the patch projection counts as initialised, and the
    decoder's `_init_weights` zeroes `decoder_pos_embed` and `mask_token`. Without positions the
    decoder can only predict each image's mean. Re-running both initialisers puts back what the
    modules' constructors intend (sin-cos positions, xavier patch projection, N(0, 0.02) mask token).
    Only for scratch models: a pretrained model's loaded weights are kept as they are.
    """
    embeddings = model.vit.embeddings
    embeddings.patch_embeddings.projection._is_hf_initialized = False
    embeddings.initialize_weights()
    model.decoder.initialize_weights(embeddings.patch_embeddings.num_patches)


def resize_positions(positions: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g*g, D) position embeddings (class token first) -> (1, 1 + grid*grid, D), bicubic in 2-D.

    The same interpolation as the encoder's `interpolate_pos_encoding` (and the MAE repo's
    `interpolate_pos_embed`). Applied to the decoder as well, where transformers' own
    `interpolate_pos_encoding` interpolates the flattened row-major sequence in 1-D, which mixes rows.
    """
    cls_token, patches = positions[:, :1], positions[:, 1:]
    old = int(round(patches.shape[1] ** 0.5))
    dim = patches.shape[-1]
    patches = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    patches = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(positions.dtype)
    return torch.cat([cls_token, patches], dim=1)


@torch.no_grad()
def fit_to_size(model, image_size: int) -> None:
    """Make a loaded ViTMAE a model of image_size x image_size inputs, in place.

    Its fixed encoder and decoder position embeddings are resized in 2-D (`resize_positions`) and its
    config says the new size, so training and evaluation need no `interpolate_pos_encoding` and the
    saved model reloads as a model of this size. Nothing changes when the size already matches.
    """
    config = model.config
    native = tuple(config.image_size) if isinstance(config.image_size, (list, tuple)) else (config.image_size,) * 2
    if native == (image_size, image_size):
        return
    grid = image_size // config.patch_size
    embeddings, decoder = model.vit.embeddings, model.decoder
    for owner, name in ((embeddings, "position_embeddings"), (decoder, "decoder_pos_embed")):
        old = getattr(owner, name)
        setattr(owner, name, torch.nn.Parameter(resize_positions(old.data, grid), requires_grad=old.requires_grad))
    embeddings.image_size = embeddings.patch_embeddings.image_size = (image_size, image_size)
    embeddings.patch_embeddings.num_patches = grid * grid
    config.image_size = image_size
    if getattr(decoder, "config", None) is not None:
        decoder.config.image_size = image_size


def train(cfg: MAEConfig, images: torch.Tensor, normalizer: Normalizer, seed: int, trainer: Trainer):
    """Train an MAE (`cfg.init`: scratch or pretrained) for `cfg.steps` steps on uint8 `images`.

    `normalizer` must be `normalizer_for(cfg, real images)`. Returns (model, logged rows).
    Fused AdamW on every device. On CUDA: bf16 autocast (`trainer.autocast`), SDPA attention, torch.compile
    when `trainer.compile` decides so, the images resident on the device when they fit, and no host
    synchronisation inside a step (masks are drawn on the device).
    """
    torch.manual_seed(seed)  # weight init and the training masks
    model = build(cfg, images.shape[-1], images.shape[1])
    # fused on the CPU too: 8 % of the quickstart MAE's step there, with weights equal to the for-loop
    # AdamW's to float rounding (the generators keep the for-loop optimisers on the CPU: no gain measured)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay,
                                  fused=True)
    schedule = (warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps) if cfg.schedule == "cosine"
                else warmup_constant(optimizer, cfg.warmup_steps))
    model, optimizer, schedule = trainer.prepare(model, optimizer, schedule)
    forward = trainer.compile(model, "mae", batch=cfg.batch_size // trainer.world)
    batches = trainer.batches(images, seed, cfg.augment)
    model.train()

    def step(_: int) -> dict[str, torch.Tensor]:
        with trainer.autocast():
            loss = forward(pixel_values=normalizer.to_model(batches(cfg.batch_size))).loss
        trainer.backward(loss)
        if cfg.grad_clip:  # no host sync: the clip factor is computed and applied on the device
            trainer.accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss}

    # ViTMAE draws its training masks from torch's global RNG, which the trainer checkpoints itself
    history = trainer.fit(step, {"model": model, "optimizer": optimizer, "schedule": schedule, "batches": batches})
    return trainer.accelerator.unwrap_model(model), history


def saved_model(mae_dir: Path) -> tuple[Path, dict]:
    """An MAE as the study saves it -> (the folder `save_pretrained` wrote, its config.json as a dict).

    `mae_dir` is that folder or the mae stage folder holding it as `model/`. Cheap (JSON only, no
    transformers), so a wrong folder is named in one line before anything loads; the weights and
    normalisation are then loaded by `probe.load_encoder`.
    """
    folder = Path(mae_dir)
    if not (folder / "config.json").is_file() and (folder / "model" / "config.json").is_file():
        folder = folder / "model"
    path = folder / "config.json"
    fix = "give an mae stage folder (RUN_DIR/mae/<name>) or the model/ folder inside it"
    if not path.is_file():
        what = "no such folder" if not Path(mae_dir).is_dir() else "no config.json there nor in its model/"
        raise UserError(f"{mae_dir}: no saved MAE ({what}); {fix}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e.__class__.__name__}); {fix}") from None
    if not isinstance(config, dict):
        config = {}
    # a translator's config.json names it in "model", a diffusers model's in "_class_name"
    kind = config.get("model_type") or config.get("model") or config.get("_class_name")
    if kind != "vit_mae":
        raise UserError(f"{path}: a {kind!r} model, not a ViT-MAE (model_type 'vit_mae'); {fix}")
    return folder, config


def fixed_noise(ids: list[str], num_patches: int, eval_seed: int) -> torch.Tensor:
    """(B, L) noise for ViTMAE, a pure function of (image id, eval seed): the same mask for every model."""
    rows = []
    for image_id in ids:
        digest = hashlib.sha256(f"{eval_seed}:{image_id}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        rows.append(torch.rand(num_patches, generator=generator))
    return torch.stack(rows)


def mask_from_noise(noise: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """(B, L) noise -> (B, L) mask, 1 = hidden from the encoder; the rule ViTMAE applies internally."""
    length = noise.shape[1]
    keep = int(length * (1 - mask_ratio))
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return (ranks >= keep).float()


def patch_mask_to_pixels(mask: torch.Tensor, patch: int, side: int) -> torch.Tensor:
    """(B, L) patch mask -> (B, 1, side, side) pixel mask."""
    grid = side // patch
    return mask.view(-1, 1, grid, grid).repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def unnormalize_patches(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Undo norm_pix_loss: (B, L, P) per-patch-normalised predictions -> the model's input space.

    `target` is the patchified model input of the same images (`model.patchify`). Each patch's mean and
    variance are taken from that original patch, over its pixels and channels together, exactly as the
    loss normalised them (unbiased variance, eps 1e-6): prediction * sqrt(var + 1e-6) + mean. This is
    how the MAE paper and HF visualise norm_pix_loss models.
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return prediction * (var + 1.0e-6) ** 0.5 + mean


@torch.no_grad()
def reconstruct(model, normalizer: Normalizer, images: torch.Tensor, noise: torch.Tensor):
    """uint8 (B, C, S, S) + noise (B, L) -> (prediction in [0, 1] (B, C, S, S), mask (B, L)).

    L = (S / model.config.patch_size)**2. The prediction is the decoder's output for every patch,
    un-normalised; it is not clipped, so the error of an out-of-range prediction counts in full.

    norm_pix_loss models predict each patch normalised by its own mean and variance, which they cannot
    know for a hidden patch. As the MAE paper does to show them, the prediction is mapped back with the
    TRUE statistics of each original patch (`unnormalize_patches`), masked ones included: the masked
    error of such a model is then the error of its predicted structure given each hidden patch's true
    brightness and contrast (an oracle every condition of a study receives alike). It is comparable
    between models that all use norm_pix_loss, not with models trained without it, and the floor to
    beat is `patch_mean_fill` (each hidden patch filled with its own true mean), not the data set mean.

    A model whose native size is not S (one not made by `build` for this size) runs with
    `interpolate_pos_encoding`.
    """
    device = next(model.parameters()).device
    side, patch = images.shape[-1], model.config.patch_size
    if noise.shape[1] != (side // patch) ** 2:
        raise ValueError(f"noise has {noise.shape[1]} entries per image; {side}-pixel images in patches of {patch} "
                         f"need {(side // patch) ** 2}")
    pixel_values = normalizer.to_model(to_unit(images).to(device))
    out = model(pixel_values=pixel_values, noise=noise.to(device),
                interpolate_pos_encoding=side != model.config.image_size)
    logits = out.logits.float()
    if model.config.norm_pix_loss:
        logits = unnormalize_patches(logits, model.patchify(pixel_values, interpolate_pos_encoding=True).float())
    prediction = model.unpatchify(logits, original_image_size=(side, side))
    return normalizer.to_unit(prediction).float().cpu(), out.mask.float().cpu()


def patch_mean_fill(images: torch.Tensor, normalizer: Normalizer, patch: int) -> torch.Tensor:
    """uint8 (B, C, S, S) -> [0, 1] (B, C, S, S): every patch replaced by its own true mean.

    What a norm_pix_loss model that predicts zeros gets from `reconstruct`: the floor for those models
    (their un-normalisation is given each hidden patch's true mean and variance).
    """
    model_input = normalizer.to_model(to_unit(images))
    batch, channels, side, _ = model_input.shape
    grid = side // patch
    # ViTMAE's patchify layout: (B, C, h, p, w, q) -> (B, h*w, p*q*C)
    patches = model_input.reshape(batch, channels, grid, patch, grid, patch).permute(0, 2, 4, 3, 5, 1)
    patches = patches.reshape(batch, grid * grid, patch * patch * channels)
    filled = unnormalize_patches(torch.zeros_like(patches), patches)
    filled = filled.reshape(batch, grid, grid, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return normalizer.to_unit(filled.reshape(batch, channels, side, side))


def masked_errors(prediction: torch.Tensor, target_unit: torch.Tensor, mask: torch.Tensor, patch: int):
    """Per image: MSE over the masked pixels, and PSNR (dB, peak 1) of the full reconstruction. -> two (B,).

    The full reconstruction is the visible pixels as given plus the prediction in the masked ones
    (what MAE papers show); the decoder's output for visible patches is never trained, so it is not
    scored.
    """
    pixel_mask = patch_mask_to_pixels(mask, patch, target_unit.shape[-1])
    squared = (prediction - target_unit) ** 2 * pixel_mask
    masked = squared.sum(dim=(1, 2, 3)) / (pixel_mask.sum(dim=(1, 2, 3)) * target_unit.shape[1])
    psnr = -10 * torch.log10(squared.mean(dim=(1, 2, 3)).clamp_min(1e-12))
    return masked, psnr
