"""ViTMAE-Base training on one GPU: genaug's training step against the stock libraries, in one run.

    python bench/mae_gpu.py              # on a CUDA machine: the figures in BENCHMARKS.md
    python bench/mae_gpu.py --tiny       # on the CPU: toy sizes, checks that the script runs

Measures, on the same card in the same process (ViTMAE-Base, 224^2, patch 16, mask 0.75, one AdamW
step per batch; the settings of ../shared/reference/anchors.md):
  1. FLOPs of one training image (forward + backward), counted by torch's FlopCounterMode;
  2. stock: HF ViTMAEForPreTraining + torch AdamW on a fixed random batch resident on the GPU:
     fp32 (TF32) eager attention at batch 128; bf16 autocast + SDPA at 256; the same compiled;
  3. genaug: `genaug.mae.train` (the study's MAE stage: uint8 scenes frames resident on the GPU,
     flips and the normaliser on the device, bf16 autocast, SDPA, fused AdamW, torch.compile through
     `runtime.compile`), compiled at batch 256 (and the batch in --big-batch), eager at 256, and at the
     seed paper's batch 16 (eager and compiled) for the per-run cost of a paper-scale study;
  4. a profile of genaug's compiled step: GPU time by kernel family, and GPU busy time vs wall time.
img/s over the timed steps (after `warm` steps), MFU = img/s x FLOPs per image / the card's dense
bf16 peak. Every figure is printed as it is measured and appended to OUT/mae_gpu.jsonl.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from _common import Report, bf16_peak, sync

from genaug.config import MAEConfig, RuntimeConfig


def base_config(tiny: bool, **overrides):
    from transformers import ViTMAEConfig

    from genaug.mae import PRESETS

    size = dict(image_size=32, patch_size=8, **PRESETS["micro"]) if tiny else {}
    return ViTMAEConfig(mask_ratio=0.75, **size, **overrides)


def flops_per_image(tiny: bool, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import ViTMAEForPreTraining

    config = base_config(tiny, attn_implementation="sdpa")
    model = ViTMAEForPreTraining(config).to(device)
    batch = 8
    x = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(pixel_values=x).loss.backward()
    return counter.get_total_flops() / batch


def stock(tiny: bool, batch: int, steps: int, warm: int, bf16: bool, compile: bool, attention: str) -> float:
    """The stock loop: HF model, torch AdamW (foreach), autocast if bf16; -> img/s over `steps`."""
    from transformers import ViTMAEForPreTraining

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = not bf16  # the anchors' fp32 row is "fp32 (TF32)"
    torch.backends.cudnn.allow_tf32 = not bf16
    config = base_config(tiny, attn_implementation=attention)
    model = ViTMAEForPreTraining(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    forward = torch.compile(model) if compile else model
    x = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
    for i in range(warm + steps):
        if i == warm:
            sync()
            start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = forward(pixel_values=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    rate = batch * steps / (time.perf_counter() - start)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    del model, optimizer, forward
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return rate


def genaug_run(cfg: MAEConfig, images: torch.Tensor, steps: int, warm: int, compile: bool, log: Path,
               profile_steps: int = 0, compile_mode: str = "default"):
    """genaug's MAE stage training; -> (img/s over the steps after `warm`, trainer.timing, profile or None)."""
    from genaug import mae
    from genaug.engine import Trainer

    marks, profile = {}, {}

    def on_step(i, row):
        if i in (warm, steps):
            sync()
            marks[i] = time.perf_counter()
        if torch.cuda.is_available() and i == warm:  # any host synchronisation in the steps after this warns
            torch.cuda.set_sync_debug_mode("warn")
        if torch.cuda.is_available() and i == steps - 1:
            torch.cuda.set_sync_debug_mode("default")
        if profile_steps and i == steps - profile_steps:
            sync()
            profile["profiler"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                                     torch.profiler.ProfilerActivity.CUDA])
            profile["profiler"].__enter__()
            profile["start"] = time.perf_counter()
        if profile_steps and i == steps:
            profile["wall_s"] = time.perf_counter() - profile["start"]
            profile["profiler"].__exit__(None, None, None)

    runtime = RuntimeConfig(log_every=steps, checkpoint_every=0, compile="on" if compile else "off",
                            compile_mode=compile_mode)
    trainer = Trainer(runtime, steps, log, "mae", on_step)
    normalizer = mae.normalizer_for(cfg, images)
    run_cfg = cfg.model_copy(update={"steps": steps})
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = mae.train(run_cfg, images, normalizer, 0, trainer)
    # the debug mode warns "called a synchronizing CUDA operation"; its own "prototype feature" note is no sync
    syncs = [str(w.message)[:160] for w in caught if "called a synchronizing" in str(w.message)]
    rate = cfg.batch_size * (steps - warm) / (marks[steps] - marks[warm])
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return rate, {**trainer.timing, "host_syncs_in_timed_steps": len(syncs), "first_sync": syncs[:1]}, profile or None


FAMILIES = (  # kernel-name fragments -> family, first match wins
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient_attention")),
    ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "matmul", "sm90", "sm80", "wgmma")),
    ("optimizer", ("adam", "multi_tensor")),
    ("fused elementwise / norm (triton)", ("triton",)),
    ("copies and casts", ("copy", "memcpy", "memset", "cast", "fill")),
)


def summarise(profile: dict, steps: int) -> dict:
    """GPU time per step by kernel family, and how busy the GPU was over the profiled wall time."""
    by_family: dict[str, float] = {}
    top = []
    busy = 0.0
    for event in profile["profiler"].key_averages():
        cuda_us = getattr(event, "self_device_time_total", 0) or getattr(event, "self_cuda_time_total", 0)
        if cuda_us <= 0 or event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        name = event.key.lower()
        family = next((f for f, keys in FAMILIES if any(k in name for k in keys)), "other")
        by_family[family] = by_family.get(family, 0.0) + cuda_us
        busy += cuda_us
        top.append((cuda_us, event.key[:90]))
    wall_ms = profile["wall_s"] * 1000 / steps
    return {
        "wall_ms_per_step": round(wall_ms, 2),
        "gpu_busy_ms_per_step": round(busy / 1000 / steps, 2),
        "gpu_busy_share": round(busy / 1000 / steps / wall_ms, 3),
        "ms_per_step_by_family": {k: round(v / 1000 / steps, 2) for k, v in sorted(by_family.items(), key=lambda kv: -kv[1])},
        "top_kernels_ms_per_step": [[round(us / 1000 / steps, 3), name] for us, name in sorted(top, reverse=True)[:12]],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: checks the script only")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_out")))
    parser.add_argument("--steps", type=int, default=30, help="timed steps per throughput figure")
    parser.add_argument("--big-batch", type=int, default=0, help="a second compiled genaug batch (0: skip)")
    parser.add_argument("--paper-batch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--paper-compiled", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--paper-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="the paper batch compiled with CUDA graphs too (runtime.compile_mode reduce-overhead)")
    parser.add_argument("--stock-fp32", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--genaug-eager", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    report = Report(args.out, "mae_gpu")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    peak = bf16_peak()
    report("machine", device=torch.cuda.get_device_name() if cuda else "cpu", torch=torch.__version__,
           transformers=__import__("transformers").__version__, bf16_peak_tflops=peak and peak / 1e12)
    tiny = args.tiny
    steps, warm = (3, 2) if tiny else (args.steps, 10)
    batch, fp32_batch = (8, 8) if tiny else (256, 128)

    flops = flops_per_image(tiny, device)
    report("flops per training image (fwd + bwd)", gflop=round(flops / 1e9, 2))

    def figures(rate):
        return {"img_per_s": round(rate, 1), "tflops": round(rate * flops / 1e12, 1),
                "mfu": round(rate * flops / peak, 3) if peak else None}

    if args.stock_fp32:
        fp32 = stock(tiny, fp32_batch, steps, warm, bf16=False, compile=False, attention="eager")
        report("stock fp32 (TF32) eager attention", batch=fp32_batch, **figures(fp32))
    bf16 = stock(tiny, batch, steps, warm, bf16=True, compile=False, attention="sdpa")
    report("stock bf16 sdpa", batch=batch, **figures(bf16))
    began = time.perf_counter()
    compiled = stock(tiny, batch, steps, warm, bf16=True, compile=True, attention="sdpa")
    report("stock bf16 sdpa compiled", batch=batch, **figures(compiled),
           total_incl_compile_s=round(time.perf_counter() - began, 1))

    # genaug's MAE stage on real (rendered) frames, resident on the device
    from genaug.data.frames import FrameRef
    from genaug.data.scenes import frame_id
    from genaug.config import DataConfig
    from genaug.data.sources import ScenesSource

    side = 32 if tiny else 224
    started = time.perf_counter()
    frames = ScenesSource(DataConfig(image_size=side), 0).load([FrameRef(frame_id(i)) for i in range(64 if tiny else 400)])
    report("data", frames=len(frames.rgb), side=side, seconds=round(time.perf_counter() - started, 1))
    preset = "micro" if tiny else "base"
    cfg = MAEConfig(preset=preset, patch_size=8 if tiny else 16, batch_size=batch, lr=1.5e-4, warmup_steps=0,
                    schedule="constant")
    began = time.perf_counter()
    rate, timing, profile = genaug_run(cfg, frames.rgb, warm + steps + 5, warm, True, args.out / "genaug.jsonl",
                                       profile_steps=5)
    report("genaug compiled", batch=batch, **figures(rate), vs_stock_compiled=round(rate / compiled, 2),
           first_step_incl_compile_s=timing.get("first_step_s"), total_s=round(time.perf_counter() - began, 1),
           host_syncs=timing["host_syncs_in_timed_steps"], first_sync=timing["first_sync"])
    if profile:
        report("genaug compiled profile", **summarise(profile, 5))
    if args.genaug_eager:
        rate, timing, _ = genaug_run(cfg, frames.rgb, warm + steps, warm, False, args.out / "genaug_eager.jsonl")
        report("genaug eager", batch=batch, **figures(rate), vs_stock_bf16=round(rate / bf16, 2),
               host_syncs=timing["host_syncs_in_timed_steps"])
    if args.big_batch and not tiny:
        big = cfg.model_copy(update={"batch_size": args.big_batch})
        rate, timing, _ = genaug_run(big, frames.rgb, warm + steps, warm, True, args.out / "genaug_big.jsonl")
        report("genaug compiled", batch=args.big_batch, **figures(rate), vs_stock_compiled=round(rate / compiled, 2),
               first_step_incl_compile_s=timing.get("first_step_s"))
    if args.paper_batch:
        paper = cfg.model_copy(update={"batch_size": 16})
        variants = ([(False, "default")] + [(True, "default")] * args.paper_compiled
                    + [(True, "reduce-overhead")] * args.paper_graphs)
        for compile, mode in variants:
            rate, timing, _ = genaug_run(paper, frames.rgb, warm + 4 * steps, warm, compile, args.out / "paper.jsonl",
                                         compile_mode=mode)
            report("genaug paper batch", batch=16, compile=compile, compile_mode=mode, **figures(rate),
                   step_ms=round(16 / rate * 1000, 2), first_step_incl_compile_s=timing.get("first_step_s"),
                   host_syncs=timing["host_syncs_in_timed_steps"], first_sync=timing["first_sync"])


if __name__ == "__main__":
    main()
