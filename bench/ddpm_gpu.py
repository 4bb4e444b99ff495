"""The `paper` DDPM on one GPU: genaug's training and sampling against stock diffusers, in one run.

    python bench/ddpm_gpu.py                # on a CUDA machine: the figures in BENCHMARKS.md
    python bench/ddpm_gpu.py --tiny         # on the CPU: toy sizes, checks that the script runs

Measures, on the same card in the same process:
  1. training img/s of the seed's UNet (113.7 M parameters, 128^2) at batch 64:
     stock = diffusers' unconditional example loop (accelerate bf16 autocast, AdamW, clip 1.0, no EMA);
     genaug = `genaug.generators.ddpm.train` (bf16 autocast, fused AdamW, EMA on, data resident on
     the GPU), eager and with torch.compile;
  2. sampling 200 images at 128^2 from the model trained in (1) on the built-in scenes: DPM-Solver++
     20 steps vs DDPM 1,000 steps, both through `genaug.generators.ddpm.sample`, plus one denoiser
     step at batch 200 with and without channels-last;
  3. FD / KID of both sample sets against 200 held-out real frames in genaug's random-conv space.
Every figure is printed as it is measured and appended to OUT/ddpm_gpu.jsonl, so a run cut short
still reports what it finished. Timings are wall-clock around synchronised CUDA work.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from genaug.config import DataConfig, DDPMConfig, RuntimeConfig, load_config  # noqa: E402


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Report:
    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "ddpm_gpu.jsonl"
        self.path.write_text("")

    def __call__(self, name: str, **figures):
        row = {"name": name, **figures}
        print(json.dumps(row), flush=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def stock_train(cfg: DDPMConfig, size: int, batch: int, steps: int, warm: int) -> float:
    """diffusers' train_unconditional.py inner loop on random data; -> img/s over the timed steps."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler

    from genaug.generators.ddpm import build_unet

    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    reference = build_unet(cfg, size, 3)  # the same architecture, built through diffusers' own class
    unet = UNet2DModel(**reference.config)
    del reference
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    schedule = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=500, num_training_steps=10_000)
    unet, optimizer, schedule = accelerator.prepare(unet, optimizer, schedule)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    clean = torch.randn(batch, 3, size, size, device=accelerator.device)
    start = None
    for i in range(warm + steps):
        if i == warm:
            sync()
            start = time.perf_counter()
        noise = torch.randn_like(clean)
        t = torch.randint(0, 1000, (batch,), device=clean.device)
        with accelerator.accumulate(unet):
            with accelerator.autocast():
                pred = unet(noise_scheduler.add_noise(clean, noise, t), t, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    sync()
    seconds = time.perf_counter() - start
    del unet, optimizer
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return batch * steps / seconds


def genaug_train(cfg: DDPMConfig, images: torch.Tensor, steps: int, warm: int, compile: bool, log: Path):
    """genaug's DDPM training; -> (img/s over steps after `warm`, seconds to step `warm`, unet, ema, scheduler)."""
    from genaug.engine import Trainer
    from genaug.generators import ddpm

    marks = {}

    def on_step(i, row):
        if i in (1, warm, steps):
            sync()
            marks[i] = time.perf_counter()

    runtime = RuntimeConfig(log_every=steps, checkpoint_every=0)
    trainer = Trainer(runtime, steps, log, "ddpm", on_step)
    began = time.perf_counter()
    raw, ema, scheduler, _ = ddpm.train(cfg, images, 0, trainer, compile=compile)
    rate = cfg.batch_size * (steps - warm) / (marks[steps] - marks[warm])
    return rate, marks[warm] - began, raw, ema, scheduler


def denoiser_step_seconds(unet, batch: int, size: int, channels_last: bool) -> float:
    """One UNet forward at `batch`, fp32 weights under bf16 autocast (how stock and genaug sample), with
    or without channels-last memory format (measured slower here for this GroupNorm-heavy UNet)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    unet = unet.to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    t = torch.full((batch,), 500, device=device)
    if channels_last and device == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        for _ in range(2):
            unet(x, t)
        sync()
        start = time.perf_counter()
        for _ in range(5):
            unet(x, t)
        sync()
    return (time.perf_counter() - start) / 5


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: checks the script only")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_out")))
    parser.add_argument("--train-steps", type=int, default=1200, help="genaug compiled run on scenes")
    parser.add_argument("--ddpm1000", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    report = Report(args.out)
    cuda = torch.cuda.is_available()
    report("machine", device=torch.cuda.get_device_name() if cuda else "cpu", torch=torch.__version__,
           diffusers=__import__("diffusers").__version__)

    if args.tiny:
        cfg = DDPMConfig(block_out_channels=[16, 32], attention_levels=[-1], batch_size=8, image_size=16)
        size, n_samples, batch, timed, warm, train_steps, ddpm_steps = 16, 8, 8, 3, 2, 6, 10
    else:
        cfg = load_config(None, ['ddpm.preset="paper"', "data.image_size=128"]).ddpm
        cfg = cfg.model_copy(update={"batch_size": 64})
        size, n_samples, batch, timed, warm, train_steps, ddpm_steps = 128, 200, 64, 20, 5, args.train_steps, 1000
    report("config", unet_levels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block, batch=batch,
           image_size=size, prediction=cfg.prediction_type, lr=cfg.lr)

    from genaug.data.sources import ScenesSource
    from genaug.data.frames import FrameRef
    from genaug.data.scenes import frame_id

    started = time.perf_counter()
    data = DataConfig(image_size=size)
    n_real = 200 if args.tiny else 1000
    frames = ScenesSource(data, 0).load([FrameRef(frame_id(i)) for i in range(n_real + n_samples)])
    train_images, held_out = frames.rgb[:n_real], frames.rgb[n_real:]
    report("data", frames=n_real, held_out=len(held_out), seconds=round(time.perf_counter() - started, 1))

    # 1. training throughput
    stock = stock_train(cfg, size, batch, timed, warm)
    report("train stock diffusers bf16", img_per_s=round(stock, 1), batch=batch)
    eager, to_warm, *_ = genaug_train(cfg, train_images, warm + timed, warm, False, args.out / "eager.jsonl")
    report("train genaug eager", img_per_s=round(eager, 1), batch=batch, vs_stock=round(eager / stock, 2))
    began = time.perf_counter()
    compiled, to_warm, raw, ema, scheduler = genaug_train(cfg, train_images, train_steps, min(50, train_steps // 2),
                                                          True, args.out / "compiled.jsonl")
    report("train genaug compiled", img_per_s=round(compiled, 1), batch=batch, vs_stock=round(compiled / stock, 2),
           steps=train_steps, first_steps_incl_compile_s=round(to_warm, 1),
           total_s=round(time.perf_counter() - began, 1))

    # 2. sampling from the trained model
    from genaug.analysis.fidelity import fidelity
    from genaug.generators import ddpm

    folder = args.out / "model_tmp"
    ddpm.save(folder, raw, scheduler, ema)
    device = "cuda" if cuda else "cpu"
    plain = denoiser_step_seconds(copy.deepcopy(ema), n_samples, size, False)
    channels_last = denoiser_step_seconds(copy.deepcopy(ema), n_samples, size, True)
    report("denoiser step at batch 200", bf16_autocast_s=round(plain, 4), channels_last_s=round(channels_last, 4),
           ddpm1000_estimate_s=round(plain * 1000, 1))
    ddpm.sample(folder / "pipeline", n_samples, "dpmsolver++", 20, n_samples, 1, device)  # warm-up
    sync()
    began = time.perf_counter()
    fast = ddpm.sample(folder / "pipeline", n_samples, "dpmsolver++", 20, n_samples, 0, device)
    sync()
    fast_s = time.perf_counter() - began
    score_fast = fidelity(fast, held_out, "random-conv", device)
    score_real = fidelity(train_images[:n_samples], held_out, "random-conv", device)
    report("sample dpmsolver++ 20 steps", n=n_samples, seconds=round(fast_s, 2), fd=round(score_fast["fd"], 3),
           kid=score_fast["kid_mean"], real_train_fd=round(score_real["fd"], 3))
    from safetensors.torch import save_file

    save_file({"dpmsolver": fast[:64].contiguous()}, args.out / "samples.safetensors")
    if args.ddpm1000:
        began = time.perf_counter()
        slow = ddpm.sample(folder / "pipeline", n_samples, "ddpm", ddpm_steps, n_samples, 0, device)
        sync()
        slow_s = time.perf_counter() - began
        score_slow = fidelity(slow, held_out, "random-conv", device)
        report(f"sample ddpm {ddpm_steps} steps", n=n_samples, seconds=round(slow_s, 2), fd=round(score_slow["fd"], 3),
               kid=score_slow["kid_mean"])
        save_file({"dpmsolver": fast[:64].contiguous(), "ddpm1000": slow[:64].contiguous()},
                  args.out / "samples.safetensors")
    import shutil

    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
