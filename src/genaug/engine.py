"""The one training loop every stage uses: device, precision, logging, progress, non-finite guard.

Models own their math: a stage hands `Trainer.fit` a `step(i) -> {name: loss tensor}` function that
does its own forward, `trainer.backward` and optimiser steps. The trainer owns everything around it:
accelerate's device placement and mixed precision (bf16 on CUDA, fp32 on the CPU), one JSON line of
mean losses every `runtime.log_every` steps (the only host synchronisation), and stopping at the first
non-finite loss.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

import torch

from genaug.config import RuntimeConfig
from genaug.errors import UserError

StepFn = Callable[[int], dict[str, torch.Tensor]]
OnStep = Callable[[int, dict[str, float]], None]


def resolve_device(runtime: RuntimeConfig) -> str:
    if runtime.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise UserError("runtime.device = 'cuda' but no CUDA device is visible; use --set runtime.device=cpu")
    return runtime.device


def set_threads(runtime: RuntimeConfig) -> None:
    torch.set_num_threads(runtime.threads or os.cpu_count() or 1)


class Trainer:
    def __init__(self, runtime: RuntimeConfig, steps: int, log_path: Path, label: str,
                 on_step: OnStep | None = None):
        from accelerate import Accelerator

        device = resolve_device(runtime)
        self.accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if device == "cuda" else "no")
        self.device = self.accelerator.device
        self.steps = steps
        self.log_every = runtime.log_every
        self.log_path = log_path
        self.label = label
        self.on_step = on_step or (lambda step, row: None)

    def prepare(self, *objects):
        return self.accelerator.prepare(*objects)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def autocast(self):
        return self.accelerator.autocast()

    def fit(self, step: StepFn) -> list[dict[str, float]]:
        """Run `steps` optimiser steps; return the logged rows ({"step": i, loss name: mean, ...})."""
        history: list[dict[str, float]] = []
        sums: dict[str, torch.Tensor] = {}
        since_log = 0
        row: dict[str, float] = {}
        with open(self.log_path, "a") as log:
            for i in range(1, self.steps + 1):
                for name, value in step(i - 1).items():
                    sums[name] = sums.get(name, 0) + value.detach().float()
                since_log += 1
                if i % self.log_every == 0 or i == self.steps:
                    row = {"step": i, **{k: (v / since_log).item() for k, v in sums.items()}}
                    bad = [k for k, v in row.items() if not math.isfinite(v)]
                    if bad:
                        raise UserError(
                            f"{self.label}: loss '{bad[0]}' became non-finite by step {i}; "
                            "lower the stage's lr or raise its warmup_steps"
                        )
                    log.write(json.dumps(row) + "\n")
                    history.append(row)
                    sums, since_log = {}, 0
                self.on_step(i, row)
        return history


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up then cosine decay to zero (MAE's and diffusers' default schedule)."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup, total)
