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
from genaug.data.images import from_unit, resize_square
from genaug.engine import Trainer, stop_requested, warmup_cosine
from genaug.errors import Interrupted

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


def plain_attention(unet) -> None:
    """Attention as softmax(QK^T)V in plain ops (diffusers' AttnProcessor) instead of PyTorch's SDPA. On
    the CPU, SDPA's flash kernel is slow at this UNet's 8-channel heads: the plain ops make a training
    step 1.1x faster in fp32 and 1.6x in bf16 (BENCHMARKS.md). The weights are the same either way."""
    from diffusers.models.attention_processor import AttnProcessor

    for module in unet.modules():
        if hasattr(module, "set_processor"):
            module.set_processor(AttnProcessor())


class DeviceEMA:
    """diffusers' EMAModel as checkpoint state: a restored average goes back to the training device."""

    def __init__(self, ema, device):
        self.ema, self.device = ema, device

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)
        self.ema.to(self.device)


def train(cfg: DDPMConfig, images: torch.Tensor, seed: int, trainer: Trainer):
    """DDPM on uint8 (N, C, S, S) `images` (resized to cfg.image_size when set), predicting
    `cfg.prediction_type`. -> (raw unet, EMA unet or None, scheduler, logged rows).

    `trainer.steps` optimiser steps (see DDPMConfig.total_steps). On CUDA: bf16 autocast, fused AdamW,
    torch.compile of the UNet when `trainer.compile` decides so, and noise drawn on the device; not
    channels-last, which made this GroupNorm-heavy UNet 38 % slower per forward on an H200
    (BENCHMARKS.md). On the CPU: plain-op attention, and bf16 where `engine.precision` says so.
    """
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    size = cfg.image_size or images.shape[-1]
    images = resize_square(images, size)
    torch.manual_seed(seed)
    unet = build_unet(cfg, size, images.shape[1])
    if not trainer.cuda:
        plain_attention(unet)
    scheduler = DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
                              prediction_type=cfg.prediction_type)
    # diffusers' unconditional example: AdamW (0.95, 0.999), wd 1e-6, cosine with warm-up, clip 1.0
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, betas=(0.95, 0.999), weight_decay=1e-6,
                                  fused=trainer.cuda)
    schedule = warmup_cosine(optimizer, cfg.warmup_steps, trainer.steps)
    unet, optimizer, schedule = trainer.prepare(unet, optimizer, schedule)
    forward = trainer.compile(unet, "unet", batch=cfg.batch_size // trainer.world)
    ema = None
    if cfg.ema:  # diffusers' example settings: warm-up with inv_gamma 1, capped at ema_max_decay
        ema = EMAModel(unet.parameters(), decay=cfg.ema_max_decay, use_ema_warmup=True, inv_gamma=1.0,
                       power=cfg.ema_power, foreach=True)
        ema.to(trainer.device)
    batches = trainer.batches(images, seed, cfg.augment)
    # noise and timesteps: drawn where they are used, so no image-sized tensor crosses to the device
    generator = torch.Generator(device=trainer.device).manual_seed(seed + 1)
    unet.train()

    def step(_: int) -> dict[str, torch.Tensor]:
        clean = batches(cfg.batch_size) * 2 - 1
        noise = torch.randn(clean.shape, generator=generator, device=clean.device)
        t = torch.randint(cfg.train_timesteps, (len(clean),), generator=generator, device=clean.device)
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


# Sampling compiles the UNet (CUDA graphs) from this many solver steps on: DDPM-1000 of the paper preset
# (200 images at 128²) was projected at about 250 s eager on an H200, host-bound like training at small
# batches, while DPM-Solver++ 20 steps takes 3.4 s in all, less than compiling would (tens of seconds).
SAMPLE_COMPILE_MIN_STEPS = 250


def sampling_compile_decision(device: str, steps: int, compile_unet: str = "auto") -> tuple[bool, str]:
    """(compile the UNet for sampling with CUDA graphs?, why), under `compile_unet` ("auto", "on", "off",
    as runtime.compile): auto compiles on CUDA for samplers of at least SAMPLE_COMPILE_MIN_STEPS steps."""
    if compile_unet != "auto":
        return compile_unet == "on", f"compile_unet = '{compile_unet}'"
    if torch.device(device).type != "cuda":
        return False, "auto: not on CUDA"
    if steps < SAMPLE_COMPILE_MIN_STEPS:
        return False, f"auto: {steps} solver steps < {SAMPLE_COMPILE_MIN_STEPS}"
    return True, f"auto: CUDA and {steps} solver steps >= {SAMPLE_COMPILE_MIN_STEPS}"


class FixedBatch:
    """The UNet as `denoise` calls it, but `forward` (its compiled form) always sees `batch` images: a
    smaller batch is padded with zero images, whose outputs are dropped, so one CUDA graph serves every
    call. The solver and its random draws see only the real images. Each call starts a new CUDA-graph
    step and returns a copy of the output, which the next replay overwrites."""

    def __init__(self, unet, batch: int, forward):
        self.unet, self.batch, self.forward = unet, batch, forward
        self.config = unet.config

    def parameters(self):
        return self.unet.parameters()

    def __call__(self, image: torch.Tensor, t: torch.Tensor):
        from types import SimpleNamespace

        n = len(image)
        if n < self.batch:
            image = torch.cat([image, image.new_zeros((self.batch - n, *image.shape[1:]))])
        torch.compiler.cudagraph_mark_step_begin()
        return SimpleNamespace(sample=self.forward(image, t).sample[:n].clone())


@torch.no_grad()
def sample(pipeline_dir: Path, n: int, sampler: str, steps: int, batch_size: int, seed: int,
           device: str = "cpu", on_batch=lambda done: None, compile_unet: str = "auto") -> torch.Tensor:
    """-> (n, C, S, S) uint8 images from a saved pipeline, in fixed-size batches seeded from `seed`.

    DDPMPipeline's loop (`denoise`), with the denoiser's weights in bf16 on CUDA and the solver's
    arithmetic in fp32 everywhere: the same images as `DDPMPipeline(...)(generator=...)` on the CPU.
    Where `sampling_compile_decision` says so (on CUDA, long samplers such as DDPM-1000), the UNet runs
    as torch.compile(mode="reduce-overhead") at one fixed batch shape (`FixedBatch`: the last batch is
    padded); the images are the eager sampler's to the compiled kernels' rounding.
    """
    import diffusers

    diffusers.utils.logging.disable_progress_bar()  # our own progress bar counts the images
    from safetensors import SafetensorError

    from genaug.errors import UserError

    cuda = torch.device(device).type == "cuda"
    # The UNet and the scheduler's config, not the pipeline class: any unconditional pipeline folder
    # (DDPMPipeline, DDIMPipeline, genaug's or diffusers' example scripts') samples the same way.
    try:
        unet = diffusers.UNet2DModel.from_pretrained(pipeline_dir, subfolder="unet", use_safetensors=True,
                                                     torch_dtype=torch.bfloat16 if cuda else None)
        scheduler_config = diffusers.DDPMScheduler.load_config(pipeline_dir, subfolder="scheduler")
    except (OSError, ValueError, SafetensorError) as e:
        raise UserError(f"{pipeline_dir}: the DDPM pipeline does not load ({e.__class__.__name__}); genaug reads "
                        "safetensors weights only; train it again") from None
    cls_name, extra = SAMPLERS[sampler]
    scheduler = getattr(diffusers, cls_name).from_config(scheduler_config, **extra)
    unet = unet.to(device).eval()
    compiled, _ = sampling_compile_decision(device, steps, compile_unet)
    if compiled:
        unet = FixedBatch(unet, min(batch_size, n), torch.compile(unet, mode="reduce-overhead", dynamic=False))
    chunks = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        generator = torch.Generator(device="cpu").manual_seed(seed * 100_003 + start)
        chunks.append(from_unit(denoise(unet, scheduler, count, steps, generator).cpu()))
        on_batch(start + count)
    return torch.cat(chunks)


def denoise(unet, scheduler, n: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """(n, C, S, S) images in [0, 1] on the UNet's device: pure noise from the CPU `generator` (so every
    device starts from the same noise), then `steps` solver steps. The UNet runs in its own dtype; the
    scheduler sees fp32."""
    from diffusers.utils.torch_utils import randn_tensor

    config, weights = unet.config, next(unet.parameters())
    size = config.sample_size if isinstance(config.sample_size, int) else tuple(config.sample_size)
    shape = (n, config.in_channels, *((size, size) if isinstance(size, int) else size))
    image = randn_tensor(shape, generator=generator, device=weights.device, dtype=torch.float32)
    scheduler.set_timesteps(steps, device=weights.device)
    for i, t in enumerate(scheduler.timesteps):
        if stop_requested():  # Ctrl-C: minutes of DDPM-1000 sampling need not run out first
            raise Interrupted(f"interrupted while sampling, at solver step {i} of {len(scheduler.timesteps)}; run "
                              "the same genaug command again to resume: from the training's last checkpoint "
                              "(runtime.checkpoint_every > 0) it samples again without retraining")
        prediction = unet(image.to(weights.dtype), t).sample.float()
        image = scheduler.step(prediction, t, image, generator=generator).prev_sample
    return (image / 2 + 0.5).clamp(0, 1)
