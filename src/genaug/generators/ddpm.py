"""DDPM for RGB images (Ho et al. 2020): diffusers' UNet2DModel trained with DDPMScheduler's noise,
an exponential moving average of its weights, sampled with a few-step solver (DPM-Solver++ by default).

A trained model is two folders (diffusers' formats, safetensors inside):
    pipeline/   DDPMPipeline with the EMA weights when EMA is on: `DDPMPipeline.from_pretrained` and
                `genaug sample` use these, as diffusers' example does after training
    unet_raw/   UNet2DModel with the raw (last-step) weights, kept for comparison or fine-tuning
The saved scheduler is the training one (DDPM); `sample` swaps in the configured solver from its config.
Images are [-1, 1] inside the model, uint8 outside.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from genaug.config import DDPMConfig
from genaug.data.images import BatchSampler, from_unit, resize_square
from genaug.engine import Trainer, warmup_cosine

SAMPLERS = {  # config name -> (diffusers scheduler class, extra config)
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}


def build_unet(cfg: DDPMConfig, image_size: int, channels: int):
    """Level i halves the resolution i times; `attention_levels` adds self-attention to the down block
    of a level and its mirrored up block (the seed's: Down x4, AttnDown, Down / Up, AttnUp, Up x4)."""
    from diffusers import UNet2DModel

    levels = len(cfg.block_out_channels)
    attention = {level % levels for level in cfg.attention_levels}
    down = ["AttnDownBlock2D" if level in attention else "DownBlock2D" for level in range(levels)]
    up = ["AttnUpBlock2D" if level in attention else "UpBlock2D" for level in reversed(range(levels))]
    return UNet2DModel(
        sample_size=image_size, in_channels=channels, out_channels=channels,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=tuple(down), up_block_types=tuple(up),
        norm_num_groups=min(32, cfg.block_out_channels[0]),
    )


class DeviceEMA:
    """diffusers' EMAModel as checkpoint state: a restored average goes back to the training device."""

    def __init__(self, ema, device):
        self.ema, self.device = ema, device

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)
        self.ema.to(self.device)


def train(cfg: DDPMConfig, images: torch.Tensor, seed: int, trainer: Trainer, compile: bool = False):
    """DDPM on uint8 (N, C, S, S) `images` (resized to cfg.image_size when set), predicting
    `cfg.prediction_type`. -> (raw unet, EMA unet or None, scheduler, logged rows).

    `trainer.steps` optimiser steps (see DDPMConfig.total_steps). On CUDA: bf16 autocast (the trainer),
    fused AdamW, and `compile` (torch.compile of the UNet) when asked. Not channels-last: on an H200 it
    made this GroupNorm-heavy UNet 38 % slower per forward (BENCHMARKS.md).
    """
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    size = cfg.image_size or images.shape[-1]
    images = resize_square(images, size)
    torch.manual_seed(seed)
    unet = build_unet(cfg, size, images.shape[1])
    scheduler = DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
                              prediction_type=cfg.prediction_type)
    cuda = trainer.device.type == "cuda"
    # diffusers' unconditional example: AdamW (0.95, 0.999), wd 1e-6, cosine with warm-up, clip 1.0
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, betas=(0.95, 0.999), weight_decay=1e-6,
                                  fused=cuda)
    schedule = warmup_cosine(optimizer, cfg.warmup_steps, trainer.steps)
    unet, optimizer, schedule = trainer.prepare(unet, optimizer, schedule)
    forward = torch.compile(unet) if compile else unet
    ema = None
    if cfg.ema:  # diffusers' example settings: warm-up with inv_gamma 1, capped at ema_max_decay
        ema = EMAModel(unet.parameters(), decay=cfg.ema_max_decay, use_ema_warmup=True, inv_gamma=1.0,
                       power=cfg.ema_power, foreach=True)
        ema.to(trainer.device)
    batches = BatchSampler(images, trainer.device, seed, cfg.augment)
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    unet.train()

    def step(_: int) -> dict[str, torch.Tensor]:
        clean = batches(cfg.batch_size) * 2 - 1
        noise = torch.randn(clean.shape, generator=generator).to(clean.device)
        t = torch.randint(cfg.train_timesteps, (len(clean),), generator=generator).to(clean.device)
        with trainer.autocast():
            predicted = forward(scheduler.add_noise(clean, noise, t), t).sample
        target = {"epsilon": noise, "sample": clean}.get(cfg.prediction_type)
        if target is None:
            target = scheduler.get_velocity(clean, noise, t)
        loss = torch.nn.functional.mse_loss(predicted.float(), target)
        trainer.backward(loss)
        trainer.accelerator.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(unet.parameters())
        return {"loss": loss}

    state = {"unet": unet, "optimizer": optimizer, "schedule": schedule, "batches": batches, "noise": generator}
    if ema is not None:
        state["ema"] = DeviceEMA(ema, trainer.device)
    history = trainer.fit(step, state)
    raw = trainer.accelerator.unwrap_model(unet)
    averaged = None
    if ema is not None:
        averaged = copy.deepcopy(raw)
        ema.copy_to(averaged.parameters())
    return raw, averaged, scheduler, history


def save(folder: Path, unet, scheduler, ema_unet=None) -> None:
    """`folder/pipeline` (EMA weights when given, else raw) and, with EMA, `folder/unet_raw`."""
    from diffusers import DDPMPipeline

    DDPMPipeline(unet=ema_unet if ema_unet is not None else unet, scheduler=scheduler).save_pretrained(
        folder / "pipeline")
    if ema_unet is not None:
        unet.save_pretrained(folder / "unet_raw")


@torch.no_grad()
def sample(pipeline_dir: Path, n: int, sampler: str, steps: int, batch_size: int, seed: int,
           device: str = "cpu", on_batch=lambda done: None) -> torch.Tensor:
    """-> (n, C, S, S) uint8 images from a saved pipeline, in fixed-size batches seeded from `seed`.

    On CUDA the denoiser runs under bf16 autocast; the solver's arithmetic stays fp32.
    """
    import contextlib

    import diffusers

    diffusers.utils.logging.disable_progress_bar()  # our own progress bar counts the images
    pipeline = diffusers.DDPMPipeline.from_pretrained(pipeline_dir)
    cls_name, extra = SAMPLERS[sampler]
    pipeline.scheduler = getattr(diffusers, cls_name).from_config(pipeline.scheduler.config, **extra)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(device)
    cuda = torch.device(device).type == "cuda"
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    chunks = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        generator = torch.Generator(device="cpu").manual_seed(seed * 100_003 + start)
        with precision:
            images = pipeline(batch_size=count, generator=generator, num_inference_steps=steps,
                              output_type="pt").images
        chunks.append(from_unit(images))
        on_batch(start + count)
    return torch.cat(chunks)
