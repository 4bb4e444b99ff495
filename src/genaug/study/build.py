"""Building one step of a plan: what the in-process runner and every launcher job do alike.

`build_step` checks the step's disk need, fills its folder through the store's atomic protocol with a
Trainer per training loop (resuming from the step's checkpoints), and writes its manifest: notes,
timing, threads. `stop_on_ctrl_c` turns SIGINT (and a job's SIGTERM) into "checkpoint and stop".
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

import torch
from rich.progress import Progress

from genaug.analysis import health
from genaug.config import Config
from genaug.distributed import world_size
from genaug.engine import Trainer, clear_stop, request_stop, stop_requested
from genaug.tracking import OFF, Run
from genaug.generators.registry import SYNTHETIC_STAGES
from genaug.study.plan import Step
from genaug.study.resources import check_disk, check_memory, disk_need, memory_need, out_of_memory
from genaug.study.stages import Context
from genaug.study.store import Store, load_current_plan


def images_written(cfg: Config, step: Step) -> int:
    """How many images a stage writes: its synthetic set (the ratio sweep draws from it), or nothing."""
    return cfg.study.n_synthetic if step.stage in SYNTHETIC_STAGES else 0


@contextmanager
def stop_on_ctrl_c(signals=(signal.SIGINT,)):
    """SIGINT (or the given `signals`: a launcher's jobs take SIGTERM, what the driver and SLURM send)
    asks every training loop to checkpoint and stop (`engine.request_stop`); a second one interrupts at
    once. Only in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        # torchrun forwards the terminal's Ctrl-C to every worker, so one press can arrive twice there
        if stop_requested() and world_size() == 1:
            raise KeyboardInterrupt
        request_stop()

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        clear_stop()


def build_step(step: Step, cfg: Config, store: Store, progress: Progress, task) -> dict:
    """Fill the step's folder through the store's atomic protocol, once its disk need fits; -> its manifest."""
    label = f"{step.stage} {step.name}"
    check_disk(store.root, label, disk_need(cfg, step.stage, step.params, images_written(cfg, step)))
    check_memory(label, memory_need(cfg, step.stage, step.params), step.stage, cfg)
    progress.start_task(task)
    inputs = {role: store.root / dep.folder for role, dep in step.inputs.items()}

    def on_step(i: int, row: dict) -> None:
        info = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step")
        progress.update(task, completed=i, info=info)

    trainers: list[Trainer] = []

    def trainer(steps: int, log: str) -> Trainer:
        # named by the stage's final folder, not the temporary one it is built in, so that the tracker's
        # run outlasts the rename and a resumed stage continues it; a second loop of a stage gets its own
        run = step.folder if log == "log.jsonl" else f"{step.folder}/{log.removesuffix('.jsonl')}"
        tracker = Run(cfg.runtime.log_with, store.root, run) if cfg.runtime.log_with != OFF else None
        made = Trainer(cfg.runtime, steps, tmp / log, step.stage, on_step,
                       store.checkpoints(step.stage, step.name, step.key), run=step.name, tracker=tracker)
        latest = made.checkpoints.latest()
        if latest is not None:
            progress.console.print(f"resuming {label} from {latest.relative_to(store.root)}")
        trainers.append(made)
        return made

    with store.building(step.stage, step.name, step.key, {r: p.name for r, p in inputs.items()}) as (tmp, manifest):
        manifest["params"] = step.params
        # the CPU threads this step ran with: results agree bit for bit only between runs with the same
        manifest["threads"] = torch.get_num_threads()
        try:
            step.run(Context(
                cfg=cfg, out=tmp, inputs=inputs, params=step.params, manifest=manifest, trainer=trainer,
                advance=lambda completed: progress.update(task, completed=completed),
                note=progress.console.print,
            ))
        except torch.OutOfMemoryError:
            raise out_of_memory(cfg, label, step.stage) from None
        flags = health.step_flags(store.root, load_current_plan(store.root), step.stage, step.name, step.params,
                                  health.read_log(tmp / "log.jsonl"), manifest.get("masked_mse"))
        if flags:  # against the sibling seeds complete so far; the report rechecks with all of them
            manifest["health"] = flags
        for found in flags:
            progress.console.print(f"[yellow]HEALTH[/] {label}: {found['kind']}: {found['evidence']}")
        # how the time went: the compile decision, the first step (compiling included) and the rest
        manifest["timing"] = {made.log_path.name: made.timing for made in trainers}
        notes = [note for made in trainers for note in made.notes]
        if notes:
            manifest["notes"] = notes
        for note in notes:
            progress.console.print(note)
        for made in trainers:
            if made.compiled:
                progress.console.print(f"{label}: compiled {', '.join(made.compiled)}; first step "
                                       f"{made.timing.get('first_step_s')} s, then {made.timing.get('steady_step_s')} s/step")
    progress.update(task, completed=step.work)
    return manifest
