"""Runs a plan: prints it, skips complete steps, builds the rest with progress bars, writes the report."""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from genaug import faults
from genaug.config import Config, to_toml
from genaug.distributed import barrier, broadcast_object, is_main, world_size
from genaug.engine import Trainer, clear_stop, request_stop, set_threads, stop_requested
from genaug.errors import Interrupted, UserError
from genaug.study.plan import Step, make_plan
from genaug.study.resources import check_disk, disk_need, out_of_memory
from genaug.study.stages import Context
from genaug.study.store import MANIFEST, Store, write_json_atomic, write_text_atomic

PLAN_FILE = "plan.json"
PROVENANCE_FILE = "provenance.json"
CURRENT_PLAN_FILE = ".current-plan.json"  # the plan of the run in progress (or the last one), for `genaug status`


def provenance(cfg: Config, plan: list[Step], store: Store) -> dict:
    """The command, versions and machine that produced the run directory's results (for the report),
    and the CPU threads each step ran with (a step built by an earlier run or a job may differ from this
    process's; steps from before genaug recorded it are left out)."""
    import platform
    import shlex
    import sys
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from genaug.engine import resolve_device

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    device = resolve_device(cfg.runtime)
    return {
        "command": "genaug " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
        "versions": {name: installed(name) for name in ("genaug", "torch", "transformers", "diffusers", "accelerate",
                                                        "torchmetrics", "kornia", "numpy", "scipy")},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "threads_per_step": {step.folder: threads for step in plan
                             if (threads := json.loads((store.root / step.folder / MANIFEST).read_text()).get("threads"))},
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def plan_table(plan: list[Step], store: Store | None) -> Table:
    table = Table(title="plan", title_justify="left")
    for column in ("stage", "run", "work", "status"):
        table.add_column(column)
    for step in plan:
        done = store is not None and store.is_complete(store.root / step.folder)
        table.add_row(step.stage, step.name, step.label or f"{step.work} {step.unit}", "[green]cached" if done else "to do")
    return table


def run_study(cfg: Config, run_dir: Path, console: Console | None = None, launcher: str = "inprocess",
              max_parallel: int = 1) -> Path:
    """Build every missing stage output of `cfg` under `run_dir`, then the report. -> run_dir.

    `launcher`: "inprocess" builds the steps here, one after another; "local" and "slurm" submit each
    step as a submitit job once its inputs are complete, at most `max_parallel` at a time
    (`study/launch.py`). Holds the run directory's lock throughout. Ctrl-C stops after the current
    training step with a checkpoint saved (a second Ctrl-C stops at once); the same command resumes.
    Under several processes (`accelerate launch`, `torchrun`) every process trains and only the main
    one writes the run directory's files.
    """
    console = console or Console(quiet=not is_main())  # one process speaks for all
    started = time.time()
    plan = make_plan(cfg)  # first: a plan that cannot run (a missing pretrained model) leaves no run directory
    check_global_batches(cfg, plan)
    store = Store(run_dir)
    with store.locked() as note, stop_on_ctrl_c():
        if note:
            console.print(note)
        set_threads(cfg.runtime)
        console.print(plan_table(plan, store))
        if is_main():
            write_json_atomic(store.root / CURRENT_PLAN_FILE, {"steps": [step.describe() for step in plan],
                                                               "launcher": launcher, "started": time.time()})
        if launcher == "inprocess":
            todo = build_in_process(plan, cfg, store, console)
        else:
            from genaug.study.launch import build_with_jobs

            todo = build_with_jobs(plan, cfg, store, console, launcher, max_parallel)
        if not is_main():
            return store.root
        summary = finish(cfg, plan, store)
    console.print(results_table(summary))
    console.print(f"{len(todo)} of {len(plan)} steps run in {time.time() - started:.0f} s; "
                  f"report: {store.root / 'report.html'}")
    return store.root


def check_global_batches(cfg: Config, plan: list[Step]) -> None:
    """Every batch_size is the global batch: under N processes each trained one must divide by N."""
    processes = world_size()
    if processes == 1:
        return
    for stage in dict.fromkeys(step.stage for step in plan):
        section = getattr(cfg, stage, None)
        batch = getattr(section, "batch_size", None)
        if isinstance(batch, int) and batch % processes:
            raise UserError(f"{stage}.batch_size = {batch} is the global batch and does not divide among {processes} "
                            f"processes; make it a multiple of {processes}")


def build_in_process(plan: list[Step], cfg: Config, store: Store, console: Console) -> list[Step]:
    """Build the plan's missing steps here, in order; -> the steps that were missing. Under several
    processes every one builds the same steps in the same order (the main process's list)."""
    missing = broadcast_object([step.folder for step in plan if not store.is_complete(store.root / step.folder)])
    todo = [step for step in plan if step.folder in missing]
    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console) as progress:
        tasks = [progress.add_task(f"{step.stage} {step.name}", total=step.work, start=False, info="")
                 for step in todo]
        for step, task in zip(todo, tasks):
            if stop_requested():
                raise Interrupted(f"interrupted before {step.stage} {step.name}; every completed stage is kept; "
                                  "run the same genaug command again to resume")
            check_disk(store.root, f"{step.stage} {step.name}",
                       disk_need(cfg, step.stage, step.params, images_written(cfg, step)))
            manifest = build_step(step, cfg, store, progress, task)
            barrier()  # every process's next step reads what the main one just wrote
            # One plain line per finished step: the record that stays in a log where bars cannot draw.
            final = " ".join(f"{k} {v:.4g}" for k, v in manifest.items() if k in ("final_loss", "masked_mse"))
            progress.console.print(f"done {step.stage} {step.name} in {manifest['seconds']:.1f} s {final}".rstrip())
            faults.point("stage")
    return todo


def finish(cfg: Config, plan: list[Step], store: Store) -> dict:
    """Every step is complete: now the run directory describes this study (a failed run leaves the last
    complete study's config, plan and report in place, consistent with each other). -> summary."""
    write_text_atomic(store.root / "config.toml", to_toml(cfg))
    write_json_atomic(store.root / PLAN_FILE, {"steps": [step.describe() for step in plan]})
    write_json_atomic(store.root / PROVENANCE_FILE, provenance(cfg, plan, store))
    from genaug.analysis.report import build_report

    return build_report(store.root)


def images_written(cfg: Config, step: Step) -> int:
    """How many images a stage writes: its synthetic set (the ratio sweep draws from it), or nothing."""
    return cfg.study.n_synthetic if step.stage in ("ddpm", "cyclegan", "pix2pix", "vit_translator", "chain") else 0


@contextmanager
def stop_on_ctrl_c(signals=(signal.SIGINT,)):
    """SIGINT (and any other of `signals`: a launcher's jobs add SIGTERM, what SLURM sends before it
    pre-empts or cancels) asks every training loop to checkpoint and stop (`engine.request_stop`); a
    second one interrupts at once. Only in the main thread, where Python delivers signals."""
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
    """Fill the step's folder through the store's atomic protocol; -> its manifest."""
    progress.start_task(task)
    label = f"{step.stage} {step.name}"
    inputs = {role: store.root / dep.folder for role, dep in step.inputs.items()}

    def on_step(i: int, row: dict) -> None:
        info = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step")
        progress.update(task, completed=i, info=info)

    trainers: list[Trainer] = []

    def trainer(steps: int, log: str) -> Trainer:
        made = Trainer(cfg.runtime, steps, tmp / log, step.stage, on_step, store.checkpoints(step.stage, step.name, step.key),
                       run=step.name)
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


def results_table(summary: dict) -> Table:
    """The headline numbers, narrow enough for an 80-column terminal; report.md has them all."""
    from genaug.analysis.report import mean_std

    table = Table(title="held-out masked-patch MSE, [0, 1] pixels, lower is better", title_justify="left")
    for column in ("modality", "condition", "MSE mean ± std", "vs real", "95% CI"):
        table.add_column(column)
    for modality, block in summary["modalities"].items():
        for condition, c in block["conditions"].items():
            rel, ci = c.get("rel_change_vs_real"), c.get("ci95")
            table.add_row(modality, f"{condition} ×{c['n_seeds']}", mean_std(c["test_mse_mean"], c["test_mse_std"], 4),
                          "" if rel is None else f"{rel:+.1%}", "" if ci is None else f"[{ci[0]:+.1%}, {ci[1]:+.1%}]")
        table.add_row(modality, "mean predictor", f"{block['baseline_mean_predictor_mse']:.4f}", "", "", end_section=True)
    return table


def load_plan(run_dir: Path) -> list[dict]:
    return json.loads((Path(run_dir) / PLAN_FILE).read_text())["steps"]
