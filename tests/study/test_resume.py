"""A study killed anywhere finishes with the results of an uninterrupted one, each attempt going on from
where the last one stopped; Ctrl-C checkpoints and stops, a second Ctrl-C stops at once; a second run is
locked out; `genaug status` tells a live run's step under way from a killed run's.

Real child processes: `python -m genaug run`, killed with SIGKILL by genaug's own fault points
(`GENAUG_KILL_AT=<point>:<n>`, see genaug/faults.py) at a given step count, checkpoint, stage or report
write, and interrupted with SIGINT.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genaug.config import load_config
from genaug.study.plan import make_plan

# One modality, two conditions, two seeds: split, CycleGAN, 4 MAEs, 5 evaluations, report. Checkpoints
# every 5 steps so that kills land between, on and inside checkpoints.
MICRO = [
    "study.modalities=[\"thermal\"]", "data.n_pool=32", "data.n_train=32", "data.n_test=12",
    "data.scenes.n_frames=90", "cyclegan.ngf=8", "cyclegan.ndf=8", "cyclegan.n_blocks=1", "cyclegan.d_layers=1",
    "cyclegan.steps=12", "mae.preset=micro", "mae.steps=20", "mae.warmup_steps=2", "study.seeds=[0, 1]",
    "study.n_synthetic=8", "runtime.log_every=5", "runtime.checkpoint_every=5", "runtime.threads=1",
]


def child_env():
    """The environment of a genaug child process: offline, no fault point, and console lines that rich
    does not wrap (the tests read the lines it prints)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "1000"}
    env.pop("GENAUG_KILL_AT", None)
    return env


def genaug_run(out, kill_at=None, extra=()):
    env = child_env()
    if kill_at:
        env["GENAUG_KILL_AT"] = kill_at
    args = [sys.executable, "-m", "genaug", "run", "--out", str(out)]
    for item in [*MICRO, *extra]:
        args += ["--set", item]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    done = genaug_run(out)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def plan_of(extra=()):
    """The study's steps, in the order an in-process run builds them."""
    return make_plan(load_config(None, [*MICRO, *extra]))


def completed_steps(run_dir):
    """"<stage> <name>" -> its manifest's mtime, for every complete stage output."""
    out = {}
    for manifest in Path(run_dir).glob("*/*/manifest.json"):
        written = json.loads(manifest.read_text())
        out[f"{written['stage']} {written['name']}"] = manifest.stat().st_mtime_ns
    return out


def built(stdout):
    """The steps a run built, from its "done <stage> <name> in ..." lines."""
    return re.findall(r"^done (\S+ \S+) in ", stdout, re.M)


def resumed(stdout):
    """[(label, checkpoint folder relative to the run directory)] from the "resuming ... from ..." lines."""
    return re.findall(r"^resuming (\S+ \S+) from (\S+)", stdout, re.M)


def test_killed_anywhere_resumes_to_the_same_results(uninterrupted, tmp_path):
    """Four attempts, each SIGKILLed at another point, then one that finishes: the same results.csv as
    an uninterrupted run. Bit-identical results alone cannot show a resume (retraining a stage from
    scratch gives the same numbers on the CPU), so every attempt is also checked for going on exactly
    where the one before it stopped: the stages it built (each stage of the plan is built once over all
    attempts), the checkpoint it resumed from (the last one written, not an older one, not none), and
    that the stages complete before it kept their manifests (same mtimes). While an attempt lies killed,
    `genaug status` calls its half-built step pending (its lock's process is gone), resuming from that
    checkpoint."""
    from genaug.study.status import step_states
    from genaug.study.store import Store

    plan = plan_of()
    labels = [f"{step.stage} {step.name}" for step in plan]
    mae = plan[3]  # the first MAE: split, CycleGAN and the mean predictor's evaluation come before it
    assert (mae.stage, mae.name) == ("mae", "thermal-real-seed0")
    out = tmp_path / "run"
    checkpoints = Store(out).checkpoints(mae.stage, mae.name, mae.key).relative_to(out).as_posix()
    attempts = [
        # inside a training loop: the 19th step is the CycleGAN's 12, then the first MAE's 7th, after its
        # checkpoint at 5
        ("step:19", labels[:3], None),
        # while a checkpoint is being written: the resumed MAE's second, at step 15 (the one at 10 is complete)
        ("checkpoint:2", [], 5),
        # between two stages: after the third this attempt completed
        ("stage:3", labels[3:6], 10),
        # while the report is being written
        ("report:1", labels[6:], None),
        (None, [], None),  # the attempt that finishes: nothing left to build
    ]
    for kill_at, builds, resumes_at in attempts:
        before = completed_steps(out) if out.exists() else {}
        attempt = genaug_run(out, kill_at)
        expected_rc = -signal.SIGKILL if kill_at else 0
        assert attempt.returncode == expected_rc, (kill_at, attempt.returncode, attempt.stderr[-2000:])
        assert built(attempt.stdout) == builds, (kill_at, attempt.stdout[-3000:])
        went_on = [] if resumes_at is None else [(f"{mae.stage} {mae.name}", f"{checkpoints}/checkpoint-{resumes_at}")]
        assert resumed(attempt.stdout) == went_on, (kill_at, attempt.stdout[-3000:])
        after = completed_steps(out)
        assert {label: after.get(label) for label in before} == before, kill_at  # nothing complete rebuilt
        assert sorted(after) == sorted([*before, *builds]), kill_at
        assert (out / "report.html").exists() == (kill_at is None)
        if kill_at == "step:19":  # killed mid-MAE: a stale lock and a half-built folder, not a running step
            states = {f"{row['stage']} {row['name']}": row for row in step_states(out)}
            assert (states[labels[3]]["state"], states[labels[3]]["detail"]) == ("pending", "resumes from checkpoint-5")
            assert [states[label]["state"] for label in labels[:3]] == ["done"] * 3
    assert sorted(completed_steps(out)) == sorted(labels)
    # the MAE that was killed twice went on from step 10 the last time, and its log holds each log step once
    manifest = json.loads((out / mae.folder / "manifest.json").read_text())
    assert manifest["timing"]["log.jsonl"]["resumed_from"] == 10
    logged = [json.loads(line)["step"] for line in (out / mae.folder / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(5, 21, 5))  # runtime.log_every = 5 of mae.steps = 20
    assert (out / "results.csv").read_text() == (uninterrupted / "results.csv").read_text()
    assert not list(out.glob("*/.tmp-*")) and not list(out.glob("*/.checkpoints-*"))  # nothing half-done left
    assert not (out / ".lock").exists()


def test_ctrl_c_stops_with_a_checkpoint_and_says_how_to_resume(uninterrupted, tmp_path):
    """SIGINT during a long CycleGAN: exit 130 with one line naming the stage, the step and the checkpoint
    saved at that very step, and the lock released. While it trains, `genaug status` shows the CycleGAN
    running (the lock's process is alive and its temporary folder is there), the split done and the
    rest pending; afterwards the CycleGAN is pending, resuming from the checkpoint the Ctrl-C saved."""
    from typer.testing import CliRunner

    from genaug.cli import app
    from genaug.study.status import step_states

    out = tmp_path / "run"
    long_stage = "cyclegan.steps=100000"  # a long stage to interrupt
    args = [sys.executable, "-m", "genaug", "run", "--out", str(out)]
    for item in [*MICRO, long_stage]:
        args += ["--set", item]
    labels = [f"{step.stage} {step.name}" for step in plan_of([long_stage])]
    child = subprocess.Popen(args, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = out / "cyclegan"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(checkpoints.glob(".checkpoints-*/checkpoint-*")):
            time.sleep(0.2)  # wait for training to be under way (its first checkpoint), then look and press Ctrl-C
        status = CliRunner().invoke(app, ["status", str(out)])
        states = {f"{row['stage']} {row['name']}": row for row in step_states(out)}
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:  # never leave a 100000-step CycleGAN running
            child.kill()
            child.wait()
    assert status.exit_code == 0, status.output
    assert status.output.strip().endswith(f"1 done, 1 running, {len(labels) - 2} pending")
    assert [states[label]["state"] for label in labels] == ["done", "running"] + ["pending"] * (len(labels) - 2)
    assert states["cyclegan thermal-cyclegan"]["detail"].startswith("at checkpoint-")

    assert child.returncode == 130, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: interrupted: cyclegan") and "run the same genaug command again" in line
    assert "Traceback" not in stderr
    stopped_at = int(re.search(r"stopped at step (\d+) of 100000; a checkpoint at step \1 is in ", line).group(1))
    assert list(checkpoints.glob(f".checkpoints-*/checkpoint-{stopped_at}"))  # saved at the step it stopped
    assert not (out / ".lock").exists()
    states = {f"{row['stage']} {row['name']}": row for row in step_states(out)}
    assert (states["cyclegan thermal-cyclegan"]["state"], states["cyclegan thermal-cyclegan"]["detail"]) == (
        "pending", f"resumes from checkpoint-{stopped_at}")


def test_a_second_ctrl_c_stops_at_once(tmp_path, monkeypatch):
    """The first Ctrl-C asks the run to stop at its next stopping point (after a training step, before
    the next stage); where none comes for a long time (here a split stage that decodes for long), a
    second Ctrl-C stops at once: nothing after it runs, the command exits 130 with one line saying so and
    how to resume, the half-built folder is removed and the lock released. In-process, so that the
    stage itself can press Ctrl-C twice and see the first one taken (`stop_requested`) before the second."""
    from typer.testing import CliRunner

    from genaug.cli import app
    from genaug.engine import stop_requested
    from genaug.study import stages

    went = []
    real_split = stages.run_split

    def long_split(ctx):
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 60
        while not stop_requested() and time.monotonic() < deadline:
            time.sleep(0.01)
        went.append(f"on after the first, stop requested: {stop_requested()}")
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 10  # a long stretch without a stopping point
        while time.monotonic() < deadline:
            time.sleep(0.01)
        went.append("on after the second")
        real_split(ctx)

    monkeypatch.setattr(stages, "run_split", long_split)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--out", str(out), *[a for s in MICRO for a in ("--set", s)]])
    assert went == ["on after the first, stop requested: True"], result.output
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: interrupted at once (second Ctrl-C)") and last.endswith("again to resume")
    assert not list(out.glob("*/.tmp-*")) and not list(out.glob("*/*/manifest.json"))
    assert not (out / ".lock").exists()
    assert not stop_requested()  # the next run in this process starts afresh


def test_a_second_run_on_the_same_directory_is_refused_and_a_stale_lock_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from genaug.study.store import Store\n"
        f"with Store({str(out)!r}).locked():\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = genaug_run(out)
        assert second.returncode == 2
        assert f"another genaug run (PID {holder.pid}) is building this run directory" in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale and the next run takes it over
    assert (out / ".lock").read_text().split()[0] == str(holder.pid)
    from genaug.study.store import Store

    with Store(out).locked() as note:
        assert note == f"took over the lock of PID {holder.pid}, which is no longer running"
        assert (out / ".lock").read_text().split()[0] == str(os.getpid())
    assert not (out / ".lock").exists()
