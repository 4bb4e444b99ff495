"""The one training loop every stage uses: device, precision, logging, checkpoints, non-finite guard.

Models own their math: a stage hands `Trainer.fit` a `step(i) -> {name: loss tensor}` function that
does its own forward, `trainer.backward` and optimiser steps, plus the `state` that defines where
training stands (networks, optimisers, schedules, EMA, samplers). The trainer owns everything around
it: accelerate's device placement and mixed precision (bf16 on CUDA, fp32 on the CPU), one JSON line
of mean losses every `runtime.log_every` steps (the only host synchronisation but one after the first
step, to time it), stopping at the first
non-finite loss, and checkpoints every `runtime.checkpoint_every` steps from which a new `fit` with the
same checkpoint folder resumes: same weights, same data order, same random numbers as if it never
stopped. It also decides what is compiled (`Trainer.compile`, `runtime.compile`) and where training
sets live (`Trainer.resident`, `runtime.resident_data`), and times the run (`Trainer.timing`).

A checkpoint is a folder `checkpoint-<step>/` holding `tensors.safetensors` (every tensor of the
state) and `state.json` (everything else, with each tensor's key in its place); it is written under
a temporary name and renamed, so a half-written one is never read. Nothing is pickled.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

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
                 on_step: OnStep | None = None, checkpoint_dir: Path | None = None):
        from accelerate import Accelerator

        device = resolve_device(runtime)
        self.accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if device == "cuda" else "no")
        self.device = self.accelerator.device
        self.steps = steps
        self.log_every = runtime.log_every
        self.log_path = log_path
        self.label = label
        self.on_step = on_step or (lambda step, row: None)
        self.checkpoints = Checkpoints(checkpoint_dir, runtime.checkpoint_every, runtime.checkpoints_total_limit)
        self.resumed_from: int | None = None
        self.step_losses: dict[str, list[float]] = {}  # after fit: every step's losses, step 1 first
        self.runtime = runtime
        self.compiled: list[str] = []
        self.timing: dict[str, Any] = {}  # after fit: compile decision, first and steady step times

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def compile_decision(self) -> tuple[bool, str]:
        """(compile?, why) for this stage under `runtime.compile`."""
        mode = self.runtime.compile
        if mode != "auto":
            return mode == "on", f"runtime.compile = '{mode}'"
        if not self.cuda:
            return False, "auto: not on CUDA (compiling does not repay itself on the CPU)"
        if self.steps < self.runtime.compile_min_steps:
            return False, f"auto: {self.steps} steps < runtime.compile_min_steps = {self.runtime.compile_min_steps}"
        return True, f"auto: CUDA and {self.steps} steps >= runtime.compile_min_steps = {self.runtime.compile_min_steps}"

    def compile(self, module: torch.nn.Module, name: str) -> torch.nn.Module:
        """`module`, or torch.compile(module) when `compile_decision` says so; the weights are shared either
        way, so what is saved and checkpointed is the plain module. The time the first step takes (compile
        included) is in `timing` after fit."""
        wanted, why = self.compile_decision()
        self.timing["compile"] = wanted
        self.timing["compile_reason"] = why
        if not wanted:
            return module
        self.compiled.append(name)
        return torch.compile(module)

    def batches(self, images: torch.Tensor, seed: int, augment):
        """A `BatchSampler` of uint8 `images` for this device, resident there when `resident` says so."""
        from genaug.data.images import BatchSampler

        return BatchSampler(images, self.device, seed, augment, resident=self.resident(images))

    def resident(self, images: torch.Tensor) -> bool:
        """Keep uint8 `images` in the training device's memory? (`runtime.resident_data`)"""
        mode = self.runtime.resident_data
        if mode != "auto" or not self.cuda:
            return mode != "off"
        free, _ = torch.cuda.mem_get_info(self.device)
        return images.numel() * images.element_size() <= free // 4

    def prepare(self, *objects):
        return self.accelerator.prepare(*objects)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def autocast(self):
        return self.accelerator.autocast()

    def fit(self, step: StepFn, state: dict[str, Any] | None = None) -> list[dict[str, float]]:
        """Run `steps` optimiser steps; return the logged rows ({"step": i, loss name: mean, ...}).

        `state`: name -> object with state_dict()/load_state_dict() (or a torch.Generator): what a
        checkpoint saves and a resume restores; torch's global RNGs are always added. Without a
        state there is nothing to restore, so no checkpoint is written or read.
        """
        checkpoints = self.checkpoints if state is not None else Checkpoints(None, 0, 1)
        state = {**(state or {}), "global_rng": GlobalRNG()}
        history: list[dict[str, float]] = []
        sums: dict[str, torch.Tensor] = {}
        # Every step's losses, kept on the device and read once at the end (no per-step sync): the
        # per-epoch means some statistics need come from these, not from the logged window means.
        per_step: dict[str, list[torch.Tensor]] = {}
        since_log, start = 0, 0
        latest = checkpoints.latest()
        if latest is not None:
            loop = checkpoints.load(latest, state, self.device)
            start, history, since_log = loop["step"], loop["history"], loop["since_log"]
            sums = {k: v.to(self.device) for k, v in loop["sums"].items()}
            per_step = {k: list(v.to(self.device).unbind()) for k, v in loop.get("per_step", {}).items()}
            self.resumed_from = start
        row: dict[str, float] = history[-1] if history else {}
        # The log is rewritten from the checkpoint's history: rows logged after it are about to be redone.
        self.log_path.write_text("".join(json.dumps(r) + "\n" for r in history))
        clock = time.perf_counter()
        with open(self.log_path, "a") as log:
            for i in range(start + 1, self.steps + 1):
                for name, value in step(i - 1).items():
                    value = value.detach().float()
                    sums[name] = sums.get(name, 0) + value
                    per_step.setdefault(name, []).append(value)
                since_log += 1
                if i == start + 1:  # the one deliberate synchronisation: how long compiling (if any) took
                    self._synchronize()
                    first = time.perf_counter()
                    self.timing["first_step_s"] = round(first - clock, 3)
                if i % self.log_every == 0 or i == self.steps:
                    row = {"step": i, **{k: (v / since_log).item() for k, v in sums.items()}}
                    bad = [k for k, v in row.items() if not math.isfinite(v)]
                    if bad:
                        raise UserError(
                            f"{self.label}: loss '{bad[0]}' became non-finite by step {i}; "
                            "lower the stage's lr or raise its warmup_steps"
                        )
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    history.append(row)
                    sums, since_log = {}, 0
                if checkpoints.due(i, self.steps):
                    checkpoints.save(i, state, {"step": i, "history": history, "since_log": since_log,
                                                     "sums": sums, "per_step": _stacked(per_step)})
                self.on_step(i, row)
        self.step_losses = {k: v.cpu().tolist() for k, v in _stacked(per_step).items()}
        if self.steps - start > 1:  # mean of the steps after the first, checkpoint writes included
            self.timing["steady_step_s"] = round((time.perf_counter() - first) / (self.steps - start - 1), 5)
        return history

    def _synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def _stacked(per_step: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack(v) for k, v in per_step.items() if v}


# ------------------------------------------------------------------------------------------ checkpoints


class GlobalRNG:
    """torch's global CPU (and CUDA) generators, as checkpointable state: kornia's augmentations and
    dropout draw from them."""

    def state_dict(self) -> dict:
        out = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda"] = torch.cuda.get_rng_state()
        return out

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


class Checkpoints:
    """`folder/checkpoint-<step>/`, every `every` steps and at the last step, at most `total_limit` kept."""

    PREFIX = "checkpoint-"

    def __init__(self, folder: Path | None, every: int, total_limit: int):
        self.folder, self.every, self.total_limit = folder, every, total_limit

    def due(self, step: int, last: int) -> bool:
        return self.folder is not None and self.every > 0 and (step % self.every == 0 or step == last)

    def all(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir() if p.name.startswith(self.PREFIX) and p.name[len(self.PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(self.PREFIX):]))

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, step: int, state: dict[str, Any], loop: dict) -> Path:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        skeleton = {"state": {name: _pack(_state_of(obj), f"{name}", tensors) for name, obj in state.items()},
                    "loop": _pack(loop, "loop", tensors)}
        final = self.folder / f"{self.PREFIX}{step}"
        tmp = self.folder / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, tmp / "tensors.safetensors")
        (tmp / "state.json").write_text(json.dumps(skeleton))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.all()[: -self.total_limit]:
            shutil.rmtree(old)
        return final

    def load(self, path: Path, state: dict[str, Any], device) -> dict:
        """Restore every object of `state` from `path`; -> the loop's own state (step, history, ...)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(path / "tensors.safetensors")
            skeleton = json.loads((path / "state.json").read_text())
        except (OSError, ValueError, SafetensorError) as e:
            raise UserError(f"{path}: unreadable checkpoint ({e.__class__.__name__}); delete the folder to "
                            "fall back to the one before it (or to a fresh start)") from None
        missing = set(state) - set(skeleton["state"])
        if missing:
            raise UserError(f"{path}: checkpoint lacks {sorted(missing)}; it was written by other code, delete it")
        for name, obj in state.items():
            saved = _unpack(skeleton["state"][name], tensors)
            if isinstance(obj, torch.Generator):
                obj.set_state(saved)
            else:
                obj.load_state_dict(saved)
        return _unpack(skeleton["loop"], tensors)


def _state_of(obj: Any) -> Any:
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _pack(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A state dict -> JSON, each tensor replaced by {"tensor": key} and stored in `tensors`.
    Dicts keep their key types (optimisers index state by int), tuples come back as lists."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {"tensor": key}
    if isinstance(value, dict):
        return {"dict": [[k, _pack(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"list": [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot checkpoint {key}: {type(value).__name__}")


def _unpack(packed: dict, tensors: dict[str, torch.Tensor]) -> Any:
    if "tensor" in packed:
        return tensors[packed["tensor"]]
    if "dict" in packed:
        return {k: _unpack(v, tensors) for k, v in packed["dict"]}
    if "list" in packed:
        return [_unpack(v, tensors) for v in packed["list"]]
    return packed["value"]


def warmup_constant(optimizer: torch.optim.Optimizer, warmup: int):
    """Linear warm-up then the constant LR (the seed paper's MAE fine-tuning: AdamW 1e-4, constant)."""
    from transformers import get_constant_schedule_with_warmup

    return get_constant_schedule_with_warmup(optimizer, warmup)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up then cosine decay to zero (MAE's and diffusers' default schedule)."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup, total)
