"""Runs a plan: prints it, skips complete steps, builds the rest with progress bars, writes the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from genaug import faults
from genaug.config import Config, to_toml
from genaug.distributed import barrier, broadcast_object, is_main, world_size
from genaug.engine import set_threads, stop_requested
from genaug.errors import Interrupted, UserError
from genaug.study.build import build_step, stop_on_ctrl_c
from genaug.study.plan import Step, make_plan
from genaug.study.store import (CURRENT_PLAN_FILE, MANIFEST, PLAN_FILE, PROVENANCE_FILE, Store, write_json_atomic,
                                write_text_atomic)


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


def run_study(cfg: Config, run_dir: Path, console: Console | None = None, launcher: str = "auto",
              max_parallel: int | None = None) -> Path:
    """Build every missing stage output of `cfg` under `run_dir`, then the report. -> run_dir.

    `launcher`: "inprocess" builds the steps here, one after another; "local" and "slurm" submit each
    step as a submitit job once its inputs are complete, at most `max_parallel` at a time
    (`study/launch.py`); "auto" picks local jobs on CUDA in one process, in-process otherwise
    (`launch.choose_launcher`, which also fills in `max_parallel` when None), and says so in one line.
    Every process of the run compiles into one inductor cache in the run directory
    (`launch.shared_compile_cache`). Holds the run directory's lock throughout. Ctrl-C stops after the
    current training step with a checkpoint saved (a second Ctrl-C stops at once); the same command
    resumes. Under several processes (`accelerate launch`, `torchrun`) every process trains and only the
    main one writes the run directory's files.
    """
    from genaug.study.launch import choose_launcher, shared_compile_cache

    console = console or Console(quiet=not is_main())  # one process speaks for all
    started = time.time()
    plan = make_plan(cfg)  # first: a plan that cannot run (a missing pretrained model) leaves no run directory
    check_global_batches(cfg, plan)
    choice = choose_launcher(cfg, launcher, max_parallel)
    store = Store(run_dir)
    with store.locked() as note, stop_on_ctrl_c(), shared_compile_cache(store.root):
        if note:
            console.print(note)
        set_threads(cfg.runtime)
        console.print(choice.why)
        console.print(plan_table(plan, store))
        if is_main():
            write_json_atomic(store.root / CURRENT_PLAN_FILE, {"steps": [step.describe() for step in plan],
                                                               "launcher": choice.launcher,
                                                               "max_parallel": choice.max_parallel,
                                                               "launcher_why": choice.why,
                                                               "started": time.time()})
        if choice.launcher == "inprocess":
            todo = build_in_process(plan, cfg, store, console)
        else:
            from genaug.study.launch import build_with_jobs

            todo = build_with_jobs(plan, cfg, store, console, choice.launcher, choice.max_parallel, choice.gpus)
        if not is_main():
            return store.root
        summary = finish(cfg, plan, store)
    console.print(results_table(summary))
    console.print(verdict_text(summary), markup=False, highlight=False)
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


def verdict_text(summary: dict) -> str:
    """The verdicts, the sensitivity and every run health flag, as the report's top says them."""
    from genaug.analysis.probes import verdict_lines
    from genaug.analysis.report import probe_summary, sensitivity_lines, verdicts

    lines = [*verdicts(summary), *sensitivity_lines(summary), *verdict_lines(probe_summary(summary))]
    lines += [f"HEALTH {f['stage']} {f['run']}: {f['kind']}: {f['evidence']}" for f in summary["health"]]
    return "\n".join(lines)


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
