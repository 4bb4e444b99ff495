"""DDPM for RGB images (Ho et al. 2020): diffusers' UNet2DModel trained with DDPMScheduler's noise,
sampled with a few-step solver (DPM-Solver++ by default).

Saved as a diffusers pipeline folder, so `DDPMPipeline.from_pretrained(folder)` loads it; the saved
scheduler is the training one (DDPM), and `sample` swaps in the configured solver from its config.
Images are [-1, 1] inside the model, uint8 outside.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genaug.config import DDPMConfig
from genaug.data.images import BatchSampler, from_unit
from genaug.engine import Trainer, warmup_cosine

SAMPLERS = {  # config name -> (diffusers scheduler class, extra config)
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}


def build_unet(cfg: DDPMConfig, image_size: int, channels: int):
    from diffusers import UNet2DModel

    levels = len(cfg.block_out_channels)
    down = ["DownBlock2D"] * (levels - 1) + ["AttnDownBlock2D" if cfg.attention else "DownBlock2D"]
    up = ["AttnUpBlock2D" if cfg.attention else "UpBlock2D"] + ["UpBlock2D"] * (levels - 1)
    return UNet2DModel(
        sample_size=image_size, in_channels=channels, out_channels=channels,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=tuple(down), up_block_types=tuple(up),
        norm_num_groups=min(32, cfg.block_out_channels[0]),
    )


def train(cfg: DDPMConfig, images: torch.Tensor, seed: int, trainer: Trainer):
    """DDPM on uint8 (N, C, S, S) `images`, predicting `cfg.prediction_type`; -> (unet, scheduler, logged rows)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    unet = build_unet(cfg, images.shape[-1], images.shape[1])
    scheduler = DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
                              prediction_type=cfg.prediction_type)
    # diffusers' unconditional example: AdamW (0.95, 0.999), wd 1e-6, cosine with warm-up, clip 1.0
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, betas=(0.95, 0.999), weight_decay=1e-6)
    schedule = warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps)
    unet, optimizer, schedule = trainer.prepare(unet, optimizer, schedule)
    batches = BatchSampler(images, trainer.device, seed, cfg.augment)
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    unet.train()

    def step(_: int) -> dict[str, torch.Tensor]:
        clean = batches(cfg.batch_size) * 2 - 1
        noise = torch.randn(clean.shape, generator=generator).to(clean.device)
        t = torch.randint(cfg.train_timesteps, (len(clean),), generator=generator).to(clean.device)
        with trainer.autocast():
            predicted = unet(scheduler.add_noise(clean, noise, t), t).sample
        target = {"epsilon": noise, "sample": clean}.get(cfg.prediction_type)
        if target is None:
            target = scheduler.get_velocity(clean, noise, t)
        loss = torch.nn.functional.mse_loss(predicted.float(), target)
        trainer.backward(loss)
        trainer.accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss}

    history = trainer.fit(step)
    return trainer.accelerator.unwrap_model(unet), scheduler, history


def save(folder: Path, unet, scheduler) -> None:
    from diffusers import DDPMPipeline

    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)


@torch.no_grad()
def sample(pipeline_dir: Path, n: int, sampler: str, steps: int, batch_size: int, seed: int,
           device: str = "cpu", on_batch=lambda done: None) -> torch.Tensor:
    """-> (n, C, S, S) uint8 images from a saved pipeline, in fixed-size batches seeded from `seed`."""
    import diffusers

    diffusers.utils.logging.disable_progress_bar()  # our own progress bar counts the images
    pipeline = diffusers.DDPMPipeline.from_pretrained(pipeline_dir)
    cls_name, extra = SAMPLERS[sampler]
    pipeline.scheduler = getattr(diffusers, cls_name).from_config(pipeline.scheduler.config, **extra)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(device)
    chunks = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        generator = torch.Generator(device="cpu").manual_seed(seed * 100_003 + start)
        images = pipeline(batch_size=count, generator=generator, num_inference_steps=steps, output_type="pt").images
        chunks.append(from_unit(images))
        on_batch(start + count)
    return torch.cat(chunks)
