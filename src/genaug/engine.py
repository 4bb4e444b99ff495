"""The one training loop every stage uses: device, precision, logging, checkpoints, non-finite guard.

Models own their math: a stage hands `Trainer.fit` a `step(i) -> {name: loss tensor}` function that
does its own forward, `trainer.backward` and optimiser steps, plus the `state` that defines where
training stands (networks, optimisers, schedules, EMA, samplers). The trainer owns everything around
it: accelerate's device placement, mixed precision (`precision`, `Trainer.autocast`), one JSON line
of mean losses every `runtime.log_every` steps (the only host synchronisation but one after the first
step, to time it; the same rows go to `runtime.log_with`'s tracker, see genaug.tracking), stopping at
the first non-finite loss, and checkpoints every `runtime.checkpoint_every` steps from which a new
`fit` with the same checkpoint folder resumes: same weights, same data order, same random numbers as
if it never stopped (the format is genaug/checkpoints.py's). It also decides what is compiled
(`Trainer.compile`, `runtime.compile`) and where training sets live (`Trainer.resident`,
`runtime.resident_data`), and times the run (`Trainer.timing`).

Data-parallel (`accelerate launch` / `torchrun`, see genaug.distributed): the same loop runs in every
process. The Accelerator wraps the models in DDP, every `*.batch_size` is the global batch (each
`Trainer.batches` sampler keeps this process's slice of it) and learning rates are as configured. The
processes exchange their losses only where a single process would read them anyway (log and
checkpoint steps): logged rows and per-step losses are means over the processes, a non-finite loss
or a Ctrl-C is decided there on those shared values so that every process stops (or rolls back) at
the same step, and only the main process writes the log file and checkpoints (each process reads the
one the main process picked). With one process nothing of this runs: the loop is the one above.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from genaug import distributed, faults, tracking
from genaug.checkpoints import Checkpoints, GlobalRNG
from genaug.config import RuntimeConfig
from genaug.errors import Interrupted, UserError

StepFn = Callable[[int], dict[str, torch.Tensor]]
OnStep = Callable[[int, dict[str, float]], None]


def resolve_device(runtime: RuntimeConfig) -> str:
    if runtime.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise UserError("runtime.device = 'cuda' but no CUDA device is visible; use --set runtime.device=cpu")
    return runtime.device


# On the CPU, bf16 pays only where the work is large convolutions: the DDPM UNet's steps run 1.6x faster
# under oneDNN's bf16 kernels on a 2-core Zen 4, while the MAE's small matmuls and the GANs' batch-4
# convolutions run no faster (BENCHMARKS.md). Only CPUs that compute in bf16 natively gain at all.
CPU_BF16_STAGES = ("ddpm",)


def cpu_computes_bf16() -> bool:
    """Has this CPU bf16 dot products in hardware (AVX512-BF16 or AMX)? Without them bf16 is emulated."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def precision(runtime: RuntimeConfig, stage: str) -> tuple[str, str]:
    """("bf16" or "fp32", why) for training `stage` under `runtime.precision`. Part of every training
    stage's key: a stage trained in one precision is never taken for the other."""
    if runtime.precision != "auto":
        return runtime.precision, f"runtime.precision = '{runtime.precision}'"
    if resolve_device(runtime) == "cuda":
        return "bf16", "auto: CUDA"
    if stage not in CPU_BF16_STAGES:
        return "fp32", f"auto: CPU, and {stage} gains nothing from bf16 there"
    if not cpu_computes_bf16():
        return "fp32", "auto: this CPU has no bf16 arithmetic (AVX512-BF16 or AMX)"
    return "bf16", f"auto: CPU with bf16 arithmetic, and {stage}'s convolutions gain from it"


def set_threads(runtime: RuntimeConfig) -> None:
    torch.set_num_threads(runtime.threads or os.cpu_count() or 1)


@dataclass
class Loop:
    """Where a `fit` stands, beside the state it trains: what a checkpoint's "loop" holds."""

    step: int = 0  # optimiser steps done
    history: list[dict[str, float]] = field(default_factory=list)  # the logged rows so far
    since_log: int = 0  # steps summed in `sums` since the last logged row
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # loss name -> sum over those steps
    # every step's losses, kept on the device and read once at the end (no per-step sync): the
    # per-epoch means some statistics need come from these
    per_step: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def saved(self, rolled_back: bool) -> dict:
        return {"step": self.step, "history": self.history, "since_log": self.since_log, "sums": self.sums,
                "per_step": _stacked(self.per_step), "rolled_back": rolled_back}

    @classmethod
    def restored(cls, saved: dict, device) -> Loop:
        return cls(step=saved["step"], history=saved["history"], since_log=saved["since_log"],
                   sums={k: v.to(device) for k, v in saved["sums"].items()},
                   per_step={k: list(v.to(device).unbind()) for k, v in saved.get("per_step", {}).items()})


# auto's CUDA-graph rule (`Trainer.compile_mode_decision`): graph a compiled step at a per-process batch
# of at most this many images
CUDAGRAPH_MAX_BATCH = 64
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile's modes that record CUDA graphs


class Trainer:
    def __init__(self, runtime: RuntimeConfig, steps: int, log_path: Path, stage: str,
                 on_step: OnStep | None = None, checkpoint_dir: Path | None = None, run: str = "",
                 tracker: tracking.Run | None = None):
        """`stage`: the config section of the stage this trains ("mae", "ddpm", ...): its precision and
        batch-size key; `run`: which of the stage's runs ("thermal-real-seed0"), for messages only;
        `tracker`: where the main process also sends each logged row and the learning rates (genaug.tracking)."""
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration

        device = resolve_device(runtime)
        self.rank, self.world, self.main = distributed.rank(), distributed.world_size(), distributed.is_main()
        distributed.init()  # several processes: join the group before the Accelerator looks for one
        self.stage = stage
        self.label = f"{stage} {run}".rstrip()
        self.precision, why = precision(runtime, stage)
        # split_batches: the configured batch is the global one, so a schedule steps once per optimiser
        # step, not once per process (accelerate's default assumes per-process batches)
        # mixed precision is ours (`autocast`), not accelerate's: its setting is fixed for the whole
        # process, and one process trains stages in different precisions
        self.accelerator = Accelerator(cpu=device == "cpu", mixed_precision="no",
                                       dataloader_config=DataLoaderConfiguration(split_batches=True))
        self.device = self.accelerator.device
        self.steps = steps
        self.log_every = runtime.log_every
        self.log_path = log_path
        self.on_step = on_step or (lambda step, row: None)
        self.checkpoints = Checkpoints(checkpoint_dir, runtime.checkpoint_every, runtime.checkpoints_total_limit)
        self.resumed_from: int | None = None
        self.step_losses: dict[str, list[float]] = {}  # after fit: every step's losses, step 1 first
        self.runtime = runtime
        self.rolled_back = False
        self.notes: list[str] = []  # what the run directory's manifest and the console should say
        self.compiled: list[str] = []
        self.compile_modes: dict[str, str] = {}  # compiled network -> its torch.compile mode
        # after fit: precision and compile decisions, first and steady step times, batch rule
        self.timing: dict[str, Any] = {"precision": self.precision, "precision_reason": why}
        self.samplers: list = []  # every `batches` sampler, for the batch rule in `timing`
        self.tracker = tracker if self.main else None

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

    def compile_mode_decision(self, batch: int) -> tuple[str, str]:
        """(torch.compile mode, why) for a compiled network of this stage whose per-process batch is `batch`,
        under `runtime.compile_mode`.

        auto's rule, one process on CUDA: "reduce-overhead" (CUDA graphs: the whole forward and backward
        replayed in one launch each) when the per-process batch is at most `CUDAGRAPH_MAX_BATCH` (64),
        "default" above it. Whether to compile at all was decided first from the stage's step count
        (`compile_decision`: at least runtime.compile_min_steps), so a graphed stage is always long enough
        to repay recording its graphs. The figures it rests on (one H200, issue 15): ViTMAE-Base at batch 16
        takes 55 ms a step eager, 45.5 ms compiled, 9.0 ms compiled with CUDA graphs (after a 61 s compile,
        paid once per study through the run's shared inductor cache); the paper DDPM UNet trains at 95
        images/s at batch 16 and 364 at batch 64, i.e. 0.17 and 0.18 s a step: the step time hardly grows
        with the batch up to 64, so launching kernels, not running them, is what a step waits for there.
        At batch 256 an MAE step takes 74 ms eager (3,463 images/s), long enough to hide its launches.
        Several processes (DDP) compile with "default": DDP's gradient hooks run between the compiled
        graphs, and CUDA graphs under DDP are not measured. On the CPU there are no CUDA graphs."""
        mode = self.runtime.compile_mode
        if mode != "auto":
            return mode, f"runtime.compile_mode = '{mode}'"
        if not self.cuda:
            return "default", "auto: not on CUDA (no CUDA graphs)"
        if self.world > 1:
            return "default", f"auto: {self.world} processes (DDP; CUDA graphs under DDP not measured)"
        if batch <= CUDAGRAPH_MAX_BATCH:
            return "reduce-overhead", (f"auto: batch {batch} <= {CUDAGRAPH_MAX_BATCH}: a small-batch step is "
                                       "host-bound; CUDA graphs replay it in one launch")
        return "default", (f"auto: batch {batch} > {CUDAGRAPH_MAX_BATCH}: the kernels outlast their launches, "
                           "no CUDA graphs")

    def compile(self, module: torch.nn.Module, name: str, batch: int) -> torch.nn.Module:
        """`module`, or torch.compile(module) when `compile_decision` says so, in the mode
        `compile_mode_decision` picks for the per-process `batch`; the weights are shared either way, so
        what is saved and checkpointed is the plain module. The decisions, and the time the first step
        takes (compile included), are in `timing` after fit."""
        wanted, why = self.compile_decision()
        self.timing["compile"] = wanted
        self.timing["compile_reason"] = why
        if not wanted:
            return module
        self.compiled.append(name)
        mode, why = self.compile_mode_decision(batch)
        self.compile_modes[name] = mode
        self.timing["compile_mode"] = mode
        self.timing["compile_mode_reason"] = why
        return torch.compile(module, mode=mode)

    @property
    def graphed(self) -> bool:
        """Does a compiled network replay CUDA graphs (whose outputs the next replay overwrites)?"""
        return any(mode in CUDAGRAPH_MODES for mode in self.compile_modes.values())

    def batches(self, images: torch.Tensor, seed: int, augment):
        """A `BatchSampler` of uint8 `images` for this device, resident there when `resident` says so.
        Called with the global batch size, it returns this process's share of the batch."""
        from genaug.data.images import BatchSampler

        sampler = BatchSampler(images, self.device, seed, augment, resident=self.resident(images),
                               rank=self.rank, world=self.world, batch_key=f"{self.stage}.batch_size")
        self.samplers.append(sampler)
        return sampler

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
        """The context every stage's forward passes run in: bf16 autocast when `precision` says so."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def fit(self, step: StepFn, state: dict[str, Any] | None = None) -> list[dict[str, float]]:
        """Run `steps` optimiser steps; return the logged rows ({"step": i, loss name: mean, ...}).

        `state`: name -> object with state_dict()/load_state_dict() (or a torch.Generator): what a
        checkpoint saves and a resume restores; torch's global RNGs are always added. Without a
        state there is nothing to restore, so no checkpoint is written or read.

        Stops with a `UserError` at the first non-finite loss (seen at the next log step), naming the
        step and the last good checkpoint, or with `runtime.on_nonfinite = "rollback"` goes back to that
        checkpoint once with every learning rate halved. After Ctrl-C (`request_stop`) it saves a
        checkpoint at the current step and raises `Interrupted`.

        Under several processes the losses are averaged over them at log and checkpoint steps (the only
        points where they meet); the non-finite check and a Ctrl-C act there, in every process at once.
        """
        try:
            return self._fit(step, state)
        finally:  # stopped or not, what the tracker holds is written out
            if self.tracker is not None:
                self.tracker.finish()

    def _fit(self, step: StepFn, state: dict[str, Any] | None) -> list[dict[str, float]]:
        checkpoints = self.checkpoints if state is not None else Checkpoints(None, 0, 1)
        state = {**(state or {}), "global_rng": GlobalRNG()}
        loop = self._restore(checkpoints, state, checkpoints.latest())
        self.resumed_from = loop.step or None
        if self.resumed_from:
            self.timing["resumed_from"] = self.resumed_from
        clock = time.perf_counter()
        first = clock
        start = loop.step
        multi = self.world > 1
        pending = 0  # several processes: this many latest per-step losses are still this process's own
        rates: dict[str, float] = {}
        while loop.step < self.steps:
            loop.step += 1
            i = loop.step
            if self.tracker is not None and (i % self.log_every == 0 or i == self.steps):
                rates = tracking.learning_rates(state)  # the step's own rates: its schedule steps inside it
            if self.graphed:  # a new iteration: the previous step's graph outputs may be overwritten now
                torch.compiler.cudagraph_mark_step_begin()
            for name, value in step(i - 1).items():
                # a copy: kept across steps, and a CUDA graph's next replay overwrites its own outputs
                value = value.detach().to(torch.float32, copy=True)
                loop.sums[name] = loop.sums.get(name, 0) + value
                loop.per_step.setdefault(name, []).append(value)
            loop.since_log += 1
            faults.point("step")
            if i == start + 1:  # the one deliberate synchronisation: how long compiling (if any) took
                self._synchronize()
                first = time.perf_counter()
                self.timing["first_step_s"] = round(first - clock, 3)
            stopping = _stop_requested
            if multi:
                pending += 1
                stopping = False  # a Ctrl-C counts where the processes meet, so that all of them stop there
                if i % self.log_every == 0 or i == self.steps or checkpoints.due(i, self.steps):
                    stopping = self._share_losses(loop, pending)
                    pending = 0
            if i % self.log_every == 0 or i == self.steps:
                row = {"step": i, **{k: (v / loop.since_log).item() for k, v in loop.sums.items()}}
                bad = [k for k, v in row.items() if not math.isfinite(v)]
                if bad:
                    loop = self._non_finite(bad[0], i, loop, checkpoints, state)
                    continue
                self._log(row, rates)
                loop.history.append(row)
                loop.sums, loop.since_log = {}, 0
            if checkpoints.due(i, self.steps) or (stopping and checkpoints.folder is not None):
                if self.main:
                    checkpoints.save(i, state, loop.saved(self.rolled_back))
                if multi:  # none goes on (or exits) before the checkpoint is complete
                    distributed.barrier()
            self.on_step(i, loop.history[-1] if loop.history else {})
            if stopping:
                where = (f"a checkpoint at step {i} is in {checkpoints.folder}" if checkpoints.folder is not None
                         else "this stage keeps no checkpoints and restarts")
                raise Interrupted(f"interrupted: {self.label} stopped at step {i} of {self.steps}; {where}; "
                                  "run the same genaug command again to resume")
        self.step_losses = {k: v.cpu().tolist() for k, v in _stacked(loop.per_step).items()}
        if self.steps - start > 1:  # mean of the steps after the first, checkpoint writes included
            self.timing["steady_step_s"] = round((time.perf_counter() - first) / (self.steps - start - 1), 5)
        self._note_batch_rule()
        return loop.history

    def _share_losses(self, loop: Loop, pending: int) -> bool:
        """Several processes: replace the `pending` latest per-step losses (each process's own) by their
        means over the processes, and the running sums with them; -> whether any process was asked to
        stop. One small all-reduce of CPU values (the losses are read on the host here anyway)."""
        names = list(loop.per_step)  # the same names in the same order in every process
        local = [torch.stack(loop.per_step[name][-pending:]).cpu() for name in names]
        flag = torch.tensor([1.0 if _stop_requested else 0.0])
        shared = distributed.all_reduce_mean(torch.cat([*local, flag]))
        for name, values in zip(names, shared[:-1].split(pending)):
            loop.per_step[name][-pending:] = list(values.to(self.device).unbind())
            if loop.since_log:
                loop.sums[name] = torch.stack(loop.per_step[name][-loop.since_log:]).sum()
        return bool(shared[-1] > 0)

    def _note_batch_rule(self) -> None:
        """The batch rule, once per stage, for its manifest: the configured batch is the global one."""
        batches = [s.global_batch for s in self.samplers if s.global_batch is not None]
        self.timing["processes"] = self.world
        if batches:
            self.timing["global_batch"] = batches[0]
            self.timing["per_process_batch"] = batches[0] // self.world
            self.timing["batch_rule"] = ("*.batch_size is the global batch, split equally across the processes; "
                                         "learning rates as configured")

    def _restore(self, checkpoints: Checkpoints, state: dict[str, Any], path: Path | None) -> Loop:
        """The loop's own state from checkpoint `path` (restoring `state` too), or a fresh one; the log
        file is rewritten to the history it holds (rows logged after it are about to be redone).
        Several processes all restore the checkpoint the main process names."""
        loop = Loop()
        if self.world > 1:
            name = distributed.broadcast_object(path.name if path is not None else None)
            path = checkpoints.folder / name if name is not None else None
        if path is not None:
            saved = checkpoints.load(path, state, self.device)
            loop = Loop.restored(saved, self.device)
            self.rolled_back = self.rolled_back or saved.get("rolled_back", False)  # once per stage, across resumes
        if self.main:
            self.log_path.write_text("".join(json.dumps(r) + "\n" for r in loop.history))
        if self.tracker is not None:  # the same cut in the tracker's run
            self.tracker.start(first_step=loop.step + 1)
        if self.world > 1:  # every process has read the checkpoint before the main one may replace it
            distributed.barrier()
        return loop

    def _log(self, row: dict[str, float], rates: dict[str, float]) -> None:
        if not self.main:
            return
        with open(self.log_path, "a") as log:
            log.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log({k: v for k, v in row.items() if k != "step"} | rates, step=row["step"])

    def _non_finite(self, name: str, i: int, loop: Loop, checkpoints: Checkpoints, state: dict) -> Loop:
        """Stop (a UserError naming the step and the last good checkpoint), or roll back once."""
        losses = torch.stack(loop.per_step[name][-loop.since_log:])
        first_bad = i - loop.since_log + 1 + int((~torch.isfinite(losses)).nonzero()[0, 0])
        latest = checkpoints.latest()
        if self.runtime.on_nonfinite == "rollback" and latest is not None and not self.rolled_back:
            self.rolled_back = True
            loop = self._restore(checkpoints, state, latest)
            halve_learning_rates(state)
            self.notes.append(f"{self.label}: loss '{name}' non-finite at step {first_bad}; rolled back to "
                              f"{latest.name} with every learning rate halved")
            return loop
        last_good = f"last good checkpoint: {latest}" if latest is not None else "no checkpoint to go back to"
        hint = ("" if self.runtime.on_nonfinite == "rollback" else
                ", or set runtime.on_nonfinite = \"rollback\" to go back to the last checkpoint with half the lr")
        raise UserError(f"{self.label}: loss '{name}' became non-finite at step {first_bad} ({last_good}); "
                        f"lower the stage's lr or raise its warmup_steps{hint}")

    def _synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


_stop_requested = False


def request_stop() -> None:
    """Ctrl-C: every running `fit` checkpoints after its current step and raises `Interrupted`."""
    global _stop_requested
    _stop_requested = True


def clear_stop() -> None:
    global _stop_requested
    _stop_requested = False


def stop_requested() -> bool:
    return _stop_requested


def halve_learning_rates(state: dict[str, Any]) -> None:
    """Every optimiser's learning rate (and every schedule's base rate, which sets it next step) x 0.5.
    A schedule prepared by accelerate is a wrapper: its own schedule's base rates are the ones halved."""
    for obj in state.values():
        obj = getattr(obj, "scheduler", obj)  # accelerate's AcceleratedScheduler keeps no base_lrs itself
        if isinstance(obj, torch.optim.Optimizer):
            for group in obj.param_groups:
                group["lr"] *= 0.5
                if "initial_lr" in group:
                    group["initial_lr"] *= 0.5
        if hasattr(obj, "base_lrs"):
            obj.base_lrs = [lr * 0.5 for lr in obj.base_lrs]


def _stacked(per_step: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack(v) for k, v in per_step.items() if v}


def warmup_constant(optimizer: torch.optim.Optimizer, warmup: int):
    """Linear warm-up then the constant LR (the seed paper's MAE fine-tuning: AdamW 1e-4, constant)."""
    from transformers import get_constant_schedule_with_warmup

    return get_constant_schedule_with_warmup(optimizer, warmup)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up then cosine decay to zero (MAE's and diffusers' default schedule)."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup, total)
