"""Masked autoencoders: build (scratch presets), train, and evaluate with fixed masks.

Pixels travel one way: uint8 -> [0, 1] (`to_unit`) -> the model's per-channel normalisation
(`Normalizer`, saved with the model as its image-processor config) -> the model; predictions come
back through `Normalizer.to_unit` and every metric is computed in [0, 1] pixel space.

The fixed mask: HF's ViTMAE keeps the patches with the smallest `noise` values. `fixed_noise` derives
each test image's noise from its id and the evaluation seed alone, so every model, whatever its
training, is asked to fill in the very same patches of the very same image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from genaug.config import MAEConfig
from genaug.data.images import BatchSampler, to_unit
from genaug.engine import Trainer, warmup_cosine

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


class Normalizer:
    """Per-channel (x - mean) / std on [0, 1] images; stored as the model's ViTImageProcessor config."""

    def __init__(self, mean: list[float], std: list[float]):
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    @classmethod
    def fit(cls, images: torch.Tensor) -> Normalizer:
        """From a uint8 (N, C, H, W) set."""
        unit = to_unit(images)
        return cls(unit.mean(dim=(0, 2, 3)).tolist(), unit.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())

    def to_model(self, unit: torch.Tensor) -> torch.Tensor:
        return (unit - self.mean.to(unit.device)) / self.std.to(unit.device)

    def to_unit(self, normalized: torch.Tensor) -> torch.Tensor:
        return normalized * self.std.to(normalized.device) + self.mean.to(normalized.device)

    def save(self, folder: Path, image_size: int) -> None:
        from transformers import ViTImageProcessor

        from PIL import Image

        # For users of the saved model: genaug itself centre-crops (data.resize) before this resize.
        ViTImageProcessor(
            do_resize=True, size={"height": image_size, "width": image_size},
            resample=Image.Resampling.BICUBIC,
            do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
            image_mean=self.mean.flatten().tolist(), image_std=self.std.flatten().tolist(),
        ).save_pretrained(folder)

    @classmethod
    def load(cls, folder: Path) -> Normalizer:
        from transformers import ViTImageProcessor

        processor = ViTImageProcessor.from_pretrained(folder)
        return cls(list(processor.image_mean), list(processor.image_std))


def build(cfg: MAEConfig, image_size: int, channels: int):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(image_size=image_size, patch_size=cfg.patch_size, num_channels=channels,
                          mask_ratio=cfg.mask_ratio, norm_pix_loss=False, **PRESETS[cfg.preset])
    model = ViTMAEForPreTraining(config)
    restore_sincos_init(model)
    return model


def restore_sincos_init(model) -> None:
    """Give a freshly built ViTMAE the fixed sin-cos position embeddings of the MAE paper.

    transformers 5.x builds scratch ViTMAEs with all-zero position embeddings: the encoder's
    `initialize_weights` is skipped once the patch projection counts as initialised, and the
    decoder's `_init_weights` zeroes `decoder_pos_embed` and `mask_token`. Without positions the
    decoder can only predict each image's mean. Re-running both initialisers puts back what the
    modules' constructors intend (sin-cos positions, xavier patch projection, N(0, 0.02) mask token).
    """
    embeddings = model.vit.embeddings
    embeddings.patch_embeddings.projection._is_hf_initialized = False
    embeddings.initialize_weights()
    model.decoder.initialize_weights(embeddings.patch_embeddings.num_patches)


def train(cfg: MAEConfig, images: torch.Tensor, normalizer: Normalizer, seed: int, trainer: Trainer):
    """Train a scratch MAE for `cfg.steps` steps on uint8 `images`; returns (model, logged rows)."""
    torch.manual_seed(seed)  # weight init and the training masks
    model = build(cfg, images.shape[-1], images.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    schedule = warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps)
    model, optimizer, schedule = trainer.prepare(model, optimizer, schedule)
    batches = BatchSampler(images, trainer.device, seed, cfg.augment)
    model.train()

    def step(_: int) -> dict[str, torch.Tensor]:
        loss = model(pixel_values=normalizer.to_model(batches(cfg.batch_size))).loss
        trainer.backward(loss)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss}

    # ViTMAE draws its training masks from torch's global RNG, which the trainer checkpoints itself
    history = trainer.fit(step, {"model": model, "optimizer": optimizer, "schedule": schedule, "batches": batches})
    return trainer.accelerator.unwrap_model(model), history


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


@torch.no_grad()
def reconstruct(model, normalizer: Normalizer, images: torch.Tensor, noise: torch.Tensor):
    """uint8 (B, C, S, S) + noise (B, L) -> (prediction in [0, 1] (B, C, S, S), mask (B, L)).

    The prediction is the decoder's output for every patch, un-normalised; it is not clipped, so the
    error of an out-of-range prediction counts in full.
    """
    device = next(model.parameters()).device
    unit = to_unit(images).to(device)
    out = model(pixel_values=normalizer.to_model(unit), noise=noise.to(device))
    side = images.shape[-1]
    prediction = model.unpatchify(out.logits, original_image_size=(side, side))
    return normalizer.to_unit(prediction).float().cpu(), out.mask.float().cpu()


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
