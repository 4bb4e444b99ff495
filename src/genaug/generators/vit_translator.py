"""The seed's ViT translator RGB (A) -> thermal (B), kept as a baseline row: the model that failed.

netG = a HF `ViTModel` encoder + a convolutional decoder, trained with MSE to the real thermal frame on
aligned pairs (as pix2pix: KAIST is aligned), Adam at `lr` with default betas, as the seed did.

Encoder `init`: "scratch" builds a small ViT at the data's image side; a hub id or local folder must
already be on this machine (never downloaded); "auto" takes google/vit-base-patch16-224 when it is
cached here, else scratch. `netG.init_used` says which one was used, for the stage's manifest.
Decoder: tokens without CLS (B, L, hidden) -> grid (B, hidden, S/p, S/p) -> log2(p) stages of
(nearest x2, conv3x3, GroupNorm, ReLU) -> conv3x3 to C_out -> tanh: (B, C_out, S, S) in [-1, 1].
Saved as `weights.safetensors` + `config.json`; the config holds the encoder's whole ViTConfig, so a
pretrained translator reloads without the network or the original checkpoint. Nothing is pickled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from genaug.config import VitTranslatorConfig
from genaug.engine import Trainer
from genaug.errors import UserError
from genaug.generators.networks import load_network, read_config, save_networks

AUTO_CHECKPOINT = "google/vit-base-patch16-224"


class VitTranslator(nn.Module):
    """(B, C_in, S, S) in [-1, 1] -> (B, C_out, S, S) in [-1, 1], so `networks.translate` applies it as is.

    The encoder's own pixel normalisation is applied here, so every caller passes [-1, 1] images:
    `(x + 1) / 2` back to [0, 1], then `(u - mean) / std`. With mean = std = 0.5 (scratch, and
    google/vit's image processor) that is the identity on [-1, 1]. mean / std are buffers, so they
    travel in the saved weights.
    """

    def __init__(self, encoder: nn.Module, out_channels: int, decoder_channels: int,
                 pixel_mean: list[float] | None = None, pixel_std: list[float] | None = None,
                 init_used: str = "scratch"):
        super().__init__()
        config = encoder.config
        self.encoder = encoder
        self.patch_size = config.patch_size
        self.init_used = init_used
        channels = config.num_channels
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean or [0.5] * channels).view(1, -1, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std or [0.5] * channels).view(1, -1, 1, 1))
        stages: list[nn.Module] = []
        width = config.hidden_size
        for i in range(int(math.log2(self.patch_size))):
            new = max(8, decoder_channels // 2**i)
            # nearest + conv rather than a transposed conv: no checkerboard artefacts (Odena et al. 2016).
            # GroupNorm, not Batch/InstanceNorm: the same in train and eval at any batch size, and it keeps
            # channels' relative levels, so an image's absolute thermal intensity survives the decoder.
            stages += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, new, 3, padding=1),
                       nn.GroupNorm(math.gcd(8, new), new), nn.ReLU(True)]
            width = new
        stages += [nn.Conv2d(width, out_channels, 3, padding=1), nn.Tanh()]
        self.decoder = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = x.shape[-1]
        pixels = ((x + 1) / 2 - self.pixel_mean) / self.pixel_std
        # A pretrained encoder's position table is for its own side (224); other sides interpolate it.
        tokens = self.encoder(pixel_values=pixels, interpolate_pos_encoding=side != self.encoder.config.image_size)
        tokens = tokens.last_hidden_state[:, 1:]  # drop CLS: (B, L, hidden), L = (S/p)^2, row-major
        grid = side // self.patch_size
        return self.decoder(tokens.transpose(1, 2).reshape(len(x), -1, grid, grid))


# --------------------------------------------------------------------------------------- the encoder


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _local_checkpoint(init: str) -> bool:
    """Whether `init` (a folder, or a hub id in the local HF cache) has a config.json here; no network."""
    from huggingface_hub import try_to_load_from_cache

    if Path(init).expanduser().is_dir():
        return (Path(init).expanduser() / "config.json").is_file()
    try:
        return isinstance(try_to_load_from_cache(init, "config.json"), str)
    except ValueError:  # not a valid repo id (HFValidationError) and not a folder either
        return False


def _normalisation(init: str, channels: int) -> tuple[list[float], list[float]]:
    """The checkpoint's image-processor mean / std when it has one, else 0.5 / 0.5 (google/vit's)."""
    from huggingface_hub import try_to_load_from_cache

    folder = Path(init).expanduser()
    if folder.is_dir():
        path = folder / "preprocessor_config.json"
        path = str(path) if path.is_file() else None
    else:
        try:
            path = try_to_load_from_cache(init, "preprocessor_config.json")
        except ValueError:
            path = None
    if isinstance(path, str):
        processor = json.loads(Path(path).read_text())
        mean, std = processor.get("image_mean"), processor.get("image_std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == channels:
            return [float(m) for m in mean], [float(s) for s in std]
    return [0.5] * channels, [0.5] * channels


def _scratch_encoder(cfg: VitTranslatorConfig, in_channels: int, image_size: int):
    if not _is_power_of_two(cfg.patch_size):
        raise UserError(f"vit_translator.patch_size = {cfg.patch_size}: the decoder doubles the side per stage, "
                        "so it must be a power of two (e.g. 4, 8 or 16)")
    if image_size % cfg.patch_size:
        raise UserError(f"vit_translator.patch_size = {cfg.patch_size} does not divide data.image_size = "
                        f"{image_size}; pick a patch size that divides it")
    if cfg.hidden_size % cfg.heads:
        raise UserError(f"vit_translator.heads = {cfg.heads} must divide vit_translator.hidden_size = "
                        f"{cfg.hidden_size}")
    from transformers import ViTConfig, ViTModel  # after the checks: a config mistake fails in milliseconds

    config = ViTConfig(image_size=image_size, patch_size=cfg.patch_size, num_channels=in_channels,
                       hidden_size=cfg.hidden_size, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                       intermediate_size=4 * cfg.hidden_size)
    return ViTModel(config, add_pooling_layer=False)


def _load_pretrained(init: str):
    """-> ViTModel from a folder or the local HF cache; raises OSError / ValueError when it cannot."""
    from transformers import ViTModel

    folder = Path(init).expanduser()
    source = str(folder) if folder.is_dir() else init  # transformers does not expand "~"
    return ViTModel.from_pretrained(source, local_files_only=True, use_safetensors=True, add_pooling_layer=False)


def _check_pretrained(encoder, init: str, in_channels: int, image_size: int) -> None:
    config = encoder.config
    if config.num_channels != in_channels:
        raise UserError(f"vit_translator.init = '{init}' takes {config.num_channels}-channel images but the "
                        f"A images have {in_channels}; use vit_translator.init = 'scratch'")
    if image_size % config.patch_size or not _is_power_of_two(config.patch_size):
        raise UserError(f"vit_translator.init = '{init}' has patch size {config.patch_size}: data.image_size = "
                        f"{image_size} must be a multiple of it (and it a power of two for the decoder); "
                        "change data.image_size or set vit_translator.init = 'scratch'")


def build_encoder(cfg: VitTranslatorConfig, in_channels: int, image_size: int):
    """-> (ViTModel, init_used, pixel_mean, pixel_std); mean / std None = 0.5. Never touches the network."""
    from safetensors import SafetensorError

    init, encoder = cfg.init, None
    if init == "auto":
        if _local_checkpoint(AUTO_CHECKPOINT):
            try:
                encoder = _load_pretrained(AUTO_CHECKPOINT)
            except (OSError, ValueError, SafetensorError):  # only partly cached (or no safetensors): as good as absent
                pass
        init = "scratch" if encoder is None else AUTO_CHECKPOINT
    if init == "scratch":
        return _scratch_encoder(cfg, in_channels, image_size), "scratch", None, None
    if encoder is None:  # a named hub id or folder: it must load
        # Checked before importing transformers: a typo or an absent model fails in milliseconds.
        fix = "download it first (`hf download <id>`) or set vit_translator.init = 'scratch'"
        if not _local_checkpoint(init):
            raise UserError(f"vit_translator.init = '{init}': no such folder or locally cached hub model; {fix}")
        try:
            encoder = _load_pretrained(init)
        except (OSError, ValueError, SafetensorError) as e:  # there, but incomplete, pickled or not a ViT
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"vit_translator.init = '{init}': cannot load it ({reason}); {fix}") from None
    _check_pretrained(encoder, init, in_channels, image_size)
    return encoder, init, *_normalisation(init, in_channels)


# ------------------------------------------------------------------------------------------ the API


def build(cfg: VitTranslatorConfig, channels_a: int, channels_b: int, image_size: int) -> dict[str, nn.Module]:
    encoder, init_used, mean, std = build_encoder(cfg, channels_a, image_size)
    return {"netG": VitTranslator(encoder, channels_b, cfg.decoder_channels, mean, std, init_used)}


def train(cfg: VitTranslatorConfig, images_a: torch.Tensor, images_b: torch.Tensor, seed: int, trainer: Trainer,
          log_note=print):
    """Aligned uint8 `images_a` (N, Ca, S, S) and `images_b` (N, Cb, S, S) -> (networks, logged rows).
    `log_note` is the translators' shared way to state a fact about the run (this one has none to state)."""
    if len(images_a) != len(images_b):
        raise ValueError("vit_translator needs aligned pairs: as many A images as B images")
    torch.manual_seed(seed)
    channels_a, channels_b = images_a.shape[1], images_b.shape[1]
    net = build(cfg, channels_a, channels_b, images_a.shape[-1])["netG"]
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=trainer.cuda)  # default betas, as the seed
    netG, optimizer = trainer.prepare(net, optimizer)
    # A and B stacked: a flip or crop moves both alike, so the pairs stay aligned.
    pairs = trainer.batches(torch.cat([images_a, images_b], dim=1), seed, cfg.augment)
    mse = nn.MSELoss()
    netG.train()

    def step(_: int) -> dict[str, torch.Tensor]:
        real_A, real_B = (pairs(cfg.batch_size) * 2 - 1).split([channels_a, channels_b], dim=1)
        with trainer.autocast():
            fake_B = netG(real_A)
        loss = mse(fake_B.float(), real_B)
        optimizer.zero_grad(set_to_none=True)
        trainer.backward(loss)
        optimizer.step()
        return {"mse": loss}

    # Where training stands, for checkpoints (torch's global RNG, for kornia's crops, the trainer adds).
    history = trainer.fit(step, state={"netG": netG, "optimizer": optimizer, "batches": pairs})
    return {"netG": trainer.accelerator.unwrap_model(netG)}, history


def save(folder: Path, cfg: VitTranslatorConfig, nets: dict[str, nn.Module], channels_a: int, channels_b: int,
         image_size: int, resize: str) -> None:
    net = nets["netG"]
    save_networks(folder, nets, {"model": "vit_translator", "channels_a": channels_a, "channels_b": channels_b,
                                 "image_size": image_size, "resize": resize, "init_used": net.init_used,
                                 # the whole encoder architecture, so a pretrained one rebuilds offline
                                 "encoder_config": net.encoder.config.to_dict(),
                                 **cfg.model_dump(mode="json")})


def load_generator(folder: Path) -> nn.Module:
    from transformers import ViTConfig, ViTModel

    config = read_config(folder)
    encoder = ViTModel(ViTConfig.from_dict(config["encoder_config"]), add_pooling_layer=False)
    net = VitTranslator(encoder, config["channels_b"], config["decoder_channels"], init_used=config["init_used"])
    return load_network(folder, "netG", net)  # the weights carry the pixel mean / std buffers too
