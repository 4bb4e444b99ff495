"""The `paper` DDPM on one GPU: genaug's training and sampling against stock diffusers, in one run.

    python bench/ddpm_gpu.py                # on a CUDA machine: the figures in BENCHMARKS.md
    python bench/ddpm_gpu.py --tiny         # on the CPU: toy sizes, checks that the script runs

Measures, on the same card in the same process:
  1. training img/s of the seed's UNet (113.7 M parameters, 128^2) at batch 64:
     stock = diffusers' unconditional example loop (accelerate bf16 autocast, AdamW, clip 1.0, no EMA);
     genaug = `genaug.generators.ddpm.train` (bf16 autocast, fused AdamW, EMA on, data resident on
     the GPU, noise drawn on the device), eager and with torch.compile (--train-steps on scenes);
  2. sampling 200 images at 128^2 from the model trained in (1): stock DDPMPipeline + DPM-Solver++ 20
     steps under bf16 autocast, against `genaug.generators.ddpm.sample` (bf16 weights, fp32 solver)
     at 15, 20 and 25 DPM-Solver++ steps and DDPM 1,000 steps (on --ddpm1000-n images);
  3. FD / KID of every sample set against 200 held-out real frames in genaug's random-conv space.
Every figure is printed as it is measured and appended to OUT/ddpm_gpu.jsonl, so a run cut short
still reports what it finished. Timings are wall-clock around synchronised CUDA work.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from _common import Report, sync

from genaug.config import DataConfig, DDPMConfig, RuntimeConfig, load_config


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
    # accelerate keeps one mixed-precision setting per process; genaug's trainer, timed next, sets its own
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
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

    runtime = RuntimeConfig(log_every=steps, checkpoint_every=0, compile="on" if compile else "off")
    trainer = Trainer(runtime, steps, log, "ddpm", on_step)
    began = time.perf_counter()
    raw, ema, scheduler, _ = ddpm.train(cfg, images, 0, trainer)
    rate = cfg.batch_size * (steps - warm) / (marks[steps] - marks[warm])
    return rate, marks[warm] - began, raw, ema, scheduler


def stock_sample(folder: Path, n: int, steps: int, seed: int) -> tuple[torch.Tensor, float]:
    """diffusers' own way: DDPMPipeline with DPM-Solver++, fp32 weights under bf16 autocast, one batch;
    -> (uint8 images, seconds)."""
    import diffusers

    from genaug.data.images import from_unit

    pipeline = diffusers.DDPMPipeline.from_pretrained(folder)
    pipeline.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config,
                                                                           algorithm_type="dpmsolver++")
    pipeline.set_progress_bar_config(disable=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipeline.to(device)
    sync()
    began = time.perf_counter()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        images = pipeline(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
                          output_type="pt").images
    sync()
    return from_unit(images), time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: checks the script only")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_out")))
    parser.add_argument("--train-steps", type=int, default=1200, help="genaug compiled run on scenes")
    parser.add_argument("--ddpm1000", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ddpm1000-n", type=int, default=64, help="images sampled with DDPM-1000")
    parser.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=True,
                        help="also train compiled (a minute or two of compiling)")
    args = parser.parse_args()
    report = Report(args.out, "ddpm_gpu")
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
    rate, to_warm, raw, ema, scheduler = genaug_train(cfg, train_images, train_steps, min(50, train_steps // 2),
                                                      args.compiled, args.out / "long.jsonl")
    report(f"train genaug {'compiled' if args.compiled else 'eager'} (the model sampled below)",
           img_per_s=round(rate, 1), batch=batch, vs_stock=round(rate / stock, 2),
           steps=train_steps, first_steps_incl_compile_s=round(to_warm, 1),
           total_s=round(time.perf_counter() - began, 1))

    # 2. sampling from the trained model
    from genaug.analysis.fidelity import fidelity
    from genaug.generators import ddpm

    folder = args.out / "model_tmp"
    ddpm.save(folder, raw, scheduler, ema)
    device = "cuda" if cuda else "cpu"
    stock_sample(folder / "pipeline", n_samples, 20, 1)  # warm-up (cuDNN/cuBLAS choices, allocator)
    stock_images, stock_s = stock_sample(folder / "pipeline", n_samples, 20, 0)
    report("sample stock DDPMPipeline dpmsolver++ 20 steps (bf16 autocast)", n=n_samples, seconds=round(stock_s, 2),
           fd=round(fidelity(stock_images, held_out, "random-conv", device)["fd"], 3))
    ddpm.sample(folder / "pipeline", n_samples, "dpmsolver++", 20, n_samples, 1, device)  # warm-up
    score_real = fidelity(train_images[:n_samples], held_out, "random-conv", device)
    samples = {}
    for steps in (20, 15, 25):
        sync()
        began = time.perf_counter()
        samples[steps] = ddpm.sample(folder / "pipeline", n_samples, "dpmsolver++", steps, n_samples, 0, device)
        sync()
        seconds = time.perf_counter() - began
        score = fidelity(samples[steps], held_out, "random-conv", device)
        report(f"sample genaug dpmsolver++ {steps} steps (bf16 weights)", n=n_samples, seconds=round(seconds, 2),
               fd=round(score["fd"], 3), kid=score["kid_mean"], real_train_fd=round(score_real["fd"], 3))
    from safetensors.torch import save_file

    save_file({"dpmsolver20": samples[20][:64].contiguous()}, args.out / "samples.safetensors")
    if args.ddpm1000:  # the 1,000-step reference on fewer images (it costs 50x the steps); KID is unbiased in n
        n_slow = min(args.ddpm1000_n, n_samples)
        began = time.perf_counter()
        slow = ddpm.sample(folder / "pipeline", n_slow, "ddpm", ddpm_steps, n_slow, 0, device)
        sync()
        slow_s = time.perf_counter() - began
        score_slow = fidelity(slow, held_out, "random-conv", device)
        score_same_n = fidelity(samples[20][:n_slow], held_out, "random-conv", device)
        report(f"sample genaug ddpm {ddpm_steps} steps (bf16 weights)", n=n_slow, seconds=round(slow_s, 2),
               fd=round(score_slow["fd"], 3), kid=score_slow["kid_mean"],
               dpmsolver20_same_n_fd=round(score_same_n["fd"], 3), dpmsolver20_same_n_kid=score_same_n["kid_mean"],
               seconds_for_200_estimate=round(slow_s * n_samples / n_slow, 1))
        save_file({"dpmsolver20": samples[20][:64].contiguous(), "ddpm1000": slow[:64].contiguous()},
                  args.out / "samples.safetensors")
    import shutil

    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
