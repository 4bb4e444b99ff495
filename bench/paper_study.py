"""`configs/paper.toml` end to end: wall time and where it goes, per stage.

    python bench/paper_study.py                     # on a CUDA machine (the ≤ 10 minute target of issue 6)
    python bench/paper_study.py --budget-s 470      # Ctrl-C the study after 470 s, report it and project the rest
    python bench/paper_study.py --run-dir DIR       # build in DIR (default: a fresh /tmp/paper_run_*); again resumes
    python bench/paper_study.py --tiny              # on the CPU: a toy-sized run that checks the script
    python bench/paper_study.py --tiny --budget-s 25    # the same, stopped partway

Only what needs downloads is overridden: the built-in scenes data instead of KAIST, and a scratch
ViTMAE-Base (patch 16, `mae.preset = "base"`) instead of `facebook/vit-mae-base`. Everything else
(both modalities, every condition and control, 5 seeds, the DDPM and the CycleGAN trained, DDPM-1000
sampling) is the config's. `genaug run` is given no --launcher, so its defaults are what runs: on CUDA,
runtime.processes_per_gpu local jobs per GPU at once, compiled stages in auto's mode, one inductor
cache in the run directory; the launcher line genaug prints and each stage's compile mode are reported.

`--budget-s` sends genaug a SIGINT when the budget is spent (it checkpoints the current training step,
or asks each running job to, and exits 130), and SIGKILLs genaug and every process it started
STOP_GRACE_S (60) s later if it has not exited: give the device call budget + 60 s + a few seconds for
the report. The run directory stays outside OUT (it holds hundreds of MB of
weights); its manifests, logs, plans and report are copied to OUT/paper_run_manifests/.

Prints the wall time and how the run ended; per stage, the seconds summed from the complete manifests,
complete and planned steps, and for a stage with missing steps a projection of the rest (labelled
projected_*); the projected total; each stage's compile decisions; the timeline of the report's "Where
the time went"; the GPU's busy fraction (nvidia-smi) over the run and while MAEs train. Appends every figure to
OUT/paper_study.jsonl.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import Report

ROOT = Path(__file__).resolve().parents[1]
NO_DOWNLOADS = ['data.source="scenes"', 'data.scenes.n_frames=1600', 'mae.init="scratch"', 'mae.preset="base"',
                "mae.patch_size=16"]
# mae.epochs=40 makes the toy study last about 30 s on 2 idle CPU cores, so that `--budget-s 25` stops
# it inside its MAEs, with some complete, as a GPU budget stops the real one.
TINY = ["data.image_size=32", "data.n_pool=40", "data.n_train=16", "data.n_test=16", "data.scenes.n_frames=120",
        'ddpm.preset="tiny"', "ddpm.epochs=0", "ddpm.steps=4", "ddpm.sample_steps=3", 'ddpm.sampler="dpmsolver++"',
        "cyclegan.num_downs=3", "cyclegan.ngf=8", "cyclegan.ndf=8", "cyclegan.steps=4", 'mae.preset="micro"',
        "mae.patch_size=4", "mae.epochs=40", "study.seeds=[0, 1]", "study.n_synthetic=16"]
# after the SIGINT: genaug stops at the next training or sampling step (other stages finish first); as a
# launcher's driver it would give its jobs up to 120 s to checkpoint and stop, but a job still compiling
# then is killed with the rest at this grace (its step counts as not started: the projection errs high)
STOP_GRACE_S = 60
CURRENT_PLAN = ".current-plan.json"  # genaug.study.runner.CURRENT_PLAN_FILE, written when a run starts
COPIED = ["*/*/manifest.json", "*/*/*.jsonl", "plan.json", CURRENT_PLAN, "report.md", "summary.json"]
# genaug's one-line Ctrl-C message from a training loop (engine.Trainer.fit); its label is "<stage> <name>"
IN_FLIGHT = re.compile(r"interrupted: (\w+) (\S+) stopped at step (\d+) of (\d+)")


class GpuBusy:
    """nvidia-smi's utilization.gpu (the share of its last sample period in which a kernel ran) every
    `every_s` seconds while the study runs, stamped with the wall clock; nothing without nvidia-smi."""

    def __init__(self, every_s: float = 0.5):
        self.samples: list[tuple[float, float]] = []  # (Unix seconds, utilisation 0-1) of GPU 0
        self.every_s, self.stopped = every_s, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True) if shutil.which("nvidia-smi") else None
        if self.thread is not None:
            self.thread.start()

    def _poll(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                self.samples.append((time.time(), float(out.split()[0]) / 100))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                continue

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=15)

    def busy(self, spans: list[tuple[float, float]] | None = None) -> dict:
        """Mean utilisation over every sample, or over those inside `spans` (Unix-second intervals)."""
        inside = [u for t, u in self.samples if spans is None or any(a <= t <= b for a, b in spans)]
        return {"samples": len(inside), "busy_fraction": round(sum(inside) / len(inside), 3) if inside else None}


def run_genaug(command: list[str], env: dict, budget_s: float) -> dict:
    """Run `command`; SIGINT it once `budget_s` (> 0) has passed, SIGKILL it STOP_GRACE_S later. Its stderr
    is passed through and its tail kept (genaug's one-line stop message is there). -> how it ended."""
    began = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    tail = bytearray()

    def forward():
        while chunk := proc.stderr.read1(65536):
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
            tail.extend(chunk)
            del tail[:-16384]

    reader = threading.Thread(target=forward, daemon=True)
    reader.start()
    ended = {"outcome": None, "stop_sent_at_s": None, "stop_sent_epoch": None}
    deadline = None  # when the grace after a stop runs out
    while True:
        now = time.perf_counter() - began
        wait = 1.0 if deadline is None else max(0.0, deadline - now)
        if deadline is None and budget_s > 0:
            wait = min(wait, max(0.0, budget_s - now))
        try:
            proc.wait(timeout=max(wait, 0.05))
            break
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:  # Ctrl-C here reached genaug too (same process group): let it stop, then report
            if deadline is None:
                ended.update(outcome="interrupted (Ctrl-C)", stop_sent_at_s=round(now, 1), stop_sent_epoch=time.time())
                deadline = now + STOP_GRACE_S
            continue
        now = time.perf_counter() - began
        if deadline is None and budget_s > 0 and now >= budget_s:
            proc.send_signal(signal.SIGINT)  # to genaug only: compile workers and the like follow it
            ended.update(outcome="stopped at budget", stop_sent_at_s=round(now, 1), stop_sent_epoch=time.time())
            deadline = now + STOP_GRACE_S
        elif deadline is not None and now >= deadline:
            kill_with_descendants(proc.pid)  # genaug and every job it started
            proc.wait()
            ended["outcome"] += f", killed {STOP_GRACE_S} s after the SIGINT"
            break
    wall = time.perf_counter() - began
    reader.join(timeout=5)
    if ended["outcome"] is None:  # 130 here: a SIGINT that did not come through this script
        ended["outcome"] = {0: "finished", 130: "interrupted (exit 130)"}.get(proc.returncode, "failed")
    return {**ended, "exit_status": proc.returncode, "wall_s": round(wall, 1),
            "stderr_tail": tail.decode(errors="replace")}


def kill_with_descendants(pid: int) -> None:
    """SIGKILL `pid` and every process below it (a launcher's submitit controllers and jobs), from /proc:
    they share this script's process group, so a group kill would end the script too."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children[int(stat.read_text().rsplit(")", 1)[1].split()[1])].append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    for each in reversed(found):  # the jobs first, so that no controller restarts or reports one
        try:
            os.kill(each, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def work(step: dict) -> tuple[float, str]:
    """A planned step's work, the unit a stage's projection scales by: describe()'s `work` when it has
    one, else the MAE's optimiser steps (params.steps), else 1 (by count)."""
    if isinstance(step.get("work"), (int, float)):
        return step["work"], "work units"
    if isinstance(step.get("params", {}).get("steps"), int):
        return step["params"]["steps"], "optimiser steps"
    return 1, "steps"


def read_plan(run_dir: Path, launched: float) -> tuple[list[dict], bool]:
    """The steps of the run's plan, and whether this run wrote it (a run that died before planning
    leaves an earlier run's plan, or none: then the complete manifests are all there is)."""
    path = run_dir / CURRENT_PLAN
    if path.is_file():
        plan = json.loads(path.read_text())
        return plan["steps"], plan.get("started", 0) >= launched
    steps = []
    for manifest in sorted(run_dir.glob("*/*/manifest.json")):
        m = json.loads(manifest.read_text())
        steps.append({"stage": m["stage"], "name": m["name"], "folder": f"{manifest.parent.relative_to(run_dir)}",
                      "params": m.get("params", {})})
    return steps, False


def manifests(run_dir: Path, steps: list[dict]) -> dict[str, dict]:
    """folder -> manifest of every complete step of the plan."""
    done = {}
    for step in steps:
        path = run_dir / step["folder"] / "manifest.json"
        if path.is_file():
            done[step["folder"]] = {**json.loads(path.read_text()), "written": path.stat().st_mtime}
    return done


def in_flight(ended: dict, steps: list[dict], done: dict[str, dict], launched: float,
              run_dir: Path | None = None) -> list[dict]:
    """The steps a stop caught inside their training loops (from genaug's message: in its own stderr when
    it builds in-process, in each job's log under RUN_DIR/.launch/logs when it runs local jobs): how far
    each got, and, for the in-process one, how long it had run (since the last manifest written, or the
    start: approximate)."""
    flights = []
    found = IN_FLIGHT.search(ended["stderr_tail"])
    texts = [(found, True)] if found else []
    logs = sorted((run_dir / ".launch" / "logs").glob("*_log.err")) if run_dir is not None else []
    for log in logs:
        if log.stat().st_mtime >= launched:  # this run's jobs only
            texts += [(match, False) for match in IN_FLIGHT.finditer(log.read_text(errors="replace"))]
    began = max([launched, *(m["written"] for m in done.values() if m["written"] >= launched)])
    for match, in_process in texts:
        stage, name, trained, of = match[1], match[2], int(match[3]), int(match[4])
        folder = next((s["folder"] for s in steps if s["stage"] == stage and s["name"] == name), None)
        if folder in done or any(f["folder"] == folder for f in flights):
            continue  # resumed and finished since, or said twice
        flights.append({"stage": stage, "folder": folder, "trained_steps": trained, "of": of,
                        "ran_s_approx": round(ended["stop_sent_epoch"] - began, 1)
                        if in_process and ended["stop_sent_epoch"] else None})
    return flights


def stage_rows(steps: list[dict], done: dict[str, dict], before: set[str], flights: list[dict]) -> list[dict]:
    """Per stage: measured seconds, complete / planned steps, and a projection of the missing ones:
    the complete steps' mean seconds per unit of work times the missing work (the steps caught in
    flight counted for their untrained share only). Step seconds, summed: what the rest would take
    one step at a time."""
    rows = []
    for stage in dict.fromkeys(s["stage"] for s in steps):
        mine = [s for s in steps if s["stage"] == stage]
        complete = [s for s in mine if s["folder"] in done]
        missing = [s for s in mine if s["folder"] not in done]
        row = {"stage": stage, "complete_steps": len(complete), "planned_steps": len(mine),
               "built_this_run": sum(s["folder"] not in before for s in complete),
               "measured_s": round(sum(done[s["folder"]].get("seconds", 0) for s in complete), 1)}
        if missing:
            unit = work(mine[0])[1]
            left = sum(work(s)[0] for s in missing)
            caught = [f for f in flights if f["folder"] in {s["folder"] for s in missing}]
            for flight in caught:
                step = next(s for s in missing if s["folder"] == flight["folder"])
                left -= work(step)[0] * flight["trained_steps"] / flight["of"]
            if caught:
                row["in_flight"] = caught
            if complete:
                rate = row["measured_s"] / sum(work(s)[0] for s in complete)
                row.update(projected_remaining_s=round(rate * left, 1),
                           projection_basis=f"{rate:.4g} s per {unit.rstrip('s')} (mean of {len(complete)} complete "
                                            f"steps) x {left:g} {unit} left in {len(missing)} steps")
            else:
                row.update(projected_remaining_s=None,
                           projection_basis=f"none: no complete {stage} step to scale from")
        rows.append(row)
    return rows


def copy_small_files(run_dir: Path, dest: Path) -> int:
    """Manifests, logs, plans and the report, relative paths kept: what the device tool can bring back."""
    shutil.rmtree(dest, ignore_errors=True)
    copied = 0
    for pattern in COPIED:
        for path in run_dir.glob(pattern):
            if path.is_file():
                target = dest / path.relative_to(run_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                copied += 1
    return copied


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: checks the script only")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_out")))
    parser.add_argument("--budget-s", type=float, default=0, help="SIGINT the study after this many seconds (0: never)")
    parser.add_argument("--run-dir", type=Path, help="the study's run directory (default: a fresh /tmp/paper_run_*)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more overrides")
    args = parser.parse_args()
    report = Report(args.out, "paper_study")
    run_dir = (args.run_dir or Path(tempfile.mkdtemp(prefix="paper_run_"))).resolve()
    overrides = [*NO_DOWNLOADS, *(TINY if args.tiny else []), *args.extra]
    command = [sys.executable, "-m", "genaug", "run", str(ROOT / "configs" / "paper.toml"), "--out", str(run_dir)]
    for item in overrides:
        command += ["--set", item]
    report("command", argv=command[1:], budget_s=args.budget_s, run_dir=str(run_dir))
    before = {str(p.parent.relative_to(run_dir)) for p in run_dir.glob("*/*/manifest.json")}  # a resumed run's
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    launched = time.time()
    gpu = GpuBusy()
    ended = run_genaug(command, {**os.environ, "PYTHONPATH": path}, args.budget_s)
    gpu.stop()

    steps, fresh_plan = read_plan(run_dir, launched)
    done = manifests(run_dir, steps)
    flights = in_flight(ended, steps, done, launched, run_dir)
    rows = stage_rows(steps, done, before, flights)
    built = sum(r["built_this_run"] for r in rows)
    built_s = sum(m.get("seconds", 0) for f, m in done.items() if f not in before)
    copied = copy_small_files(run_dir, args.out / "paper_run_manifests")
    launched_plan = json.loads((run_dir / CURRENT_PLAN).read_text()) if fresh_plan else {}
    report("launcher (genaug run's choice; no --launcher given)", launcher=launched_plan.get("launcher"),
           max_parallel=launched_plan.get("max_parallel"), why=launched_plan.get("launcher_why"))
    report("paper study", outcome=ended["outcome"], exit_status=ended["exit_status"], wall_s=ended["wall_s"],
           stop_sent_at_s=ended["stop_sent_at_s"], target_s=600, complete_steps=len(done), planned_steps=len(steps),
           built_this_run=built, cached_before=len(done) - built, plan_from_this_run=fresh_plan,
           # imports, planning, the report, and a stopped step's unfinished work: no manifest holds them
           outside_manifests_s=round(ended["wall_s"] - built_s, 1), run_dir=str(run_dir), files_copied=copied)
    for row in rows:
        report("stage", **row)
    unknown = [r["stage"] for r in rows if "projected_remaining_s" in r and r["projected_remaining_s"] is None]
    remaining = sum(r.get("projected_remaining_s") or 0 for r in rows)
    cached_s = sum(m.get("seconds", 0) for f, m in done.items() if f in before)
    # steps side by side (the launcher's jobs): the step-seconds built per wall second so far
    concurrency = built_s / ended["wall_s"] if ended["wall_s"] else 0
    projection = {"measured_wall_s": ended["wall_s"], "projected_remaining_s": round(remaining, 1),
                  "projected_total_s": round(ended["wall_s"] + remaining, 1),
                  "projection_missing_for": unknown, "projected_total_is_lower_bound": bool(unknown),
                  "step_seconds_per_wall_second": round(concurrency, 2)}
    if concurrency > 1:  # the rest at the same overlap: the serial figures above are an upper bound then
        projection["projected_total_at_this_overlap_s"] = round(ended["wall_s"] + remaining / concurrency, 1)
    if cached_s:  # steps an earlier run built: what they took, to judge the whole study from scratch
        projection.update(cached_steps_s=round(cached_s, 1),
                          projected_total_from_scratch_s=round(ended["wall_s"] + remaining + cached_s, 1))
    report("projection (projected_* are estimates, not measurements)", **projection)

    # the report's "Where the time went": wall time per stage while any of its steps built, lanes side by side
    from genaug.analysis import timeline

    spans, cuts = timeline.spans(list(done.values()))
    if spans:
        report("where the time went (complete steps)", lanes=max(s.lane for s in spans) + 1, pauses_cut=len(cuts),
               stages=[{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
                       for row in timeline.stage_times(spans)],
               steps=[[s.stage, s.name, round(s.start, 1), round(s.end, 1), s.lane, s.threads] for s in spans])
    # the target: the GPU busy >= 85 % of the wall time while MAEs train (nvidia-smi; none on a CPU machine)
    mae_spans = [(m["started"], m["finished"]) for m in done.values() if m["stage"] == "mae" and "started" in m]
    report("gpu busy (nvidia-smi utilization.gpu, sampled every 0.5 s)", available=gpu.thread is not None,
           whole_run=gpu.busy(), while_maes_train=gpu.busy(mae_spans))

    compiled, not_compiled = [], collections.Counter()
    for m in done.values():
        for log, timing in m.get("timing", {}).items():
            if timing.get("compile"):
                compiled.append([m["name"], timing.get("compile_mode"), timing.get("first_step_s"),
                                 timing.get("steady_step_s")])
            elif "compile" in timing:
                not_compiled[f"{m['stage']}: {timing.get('compile_reason', '')}"] += 1
    modes = collections.Counter(f"{m['stage']}: {t.get('compile_mode')} ({t.get('compile_mode_reason', '')})"
                                for m in done.values() for t in m.get("timing", {}).values() if t.get("compile"))
    report("compiled stages (name, mode, first step s, steady step s)", stages=compiled, modes=dict(modes),
           not_compiled=dict(not_compiled))


if __name__ == "__main__":
    main()
