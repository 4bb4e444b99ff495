"""A study killed anywhere finishes with the results of an uninterrupted one; a second run is locked out.

Real child processes: `python -m genaug run`, killed with SIGKILL by genaug's own fault points
(`GENAUG_KILL_AT=<point>:<n>`, see genaug/faults.py) at a given step count, checkpoint, stage or report
write, and interrupted with SIGINT.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

# One modality, two conditions, two seeds: split, CycleGAN, 4 MAEs, 5 evaluations, report. Checkpoints
# every 5 steps so that kills land between, on and inside checkpoints.
MICRO = [
    "study.modalities=[\"thermal\"]", "data.n_pool=32", "data.n_train=32", "data.n_test=12",
    "data.scenes.n_frames=90", "cyclegan.ngf=8", "cyclegan.ndf=8", "cyclegan.n_blocks=1", "cyclegan.d_layers=1",
    "cyclegan.steps=12", "mae.preset=micro", "mae.steps=20", "mae.warmup_steps=2", "study.seeds=[0, 1]",
    "study.n_synthetic=8", "runtime.log_every=5", "runtime.checkpoint_every=5", "runtime.threads=1",
]


def genaug_run(out, kill_at=None, extra=()):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("GENAUG_KILL_AT", None)
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


def test_killed_anywhere_resumes_to_the_same_results(uninterrupted, tmp_path):
    out = tmp_path / "run"
    # inside a training loop (the 19th step: the CycleGAN's 12, then the first MAE's 7th, after its
    # checkpoint at 5), while a checkpoint is being written, between two stages, and while the report
    # is being written
    outputs = []
    for kill_at in ("step:19", "checkpoint:2", "stage:3", "report:1"):
        killed = genaug_run(out, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.returncode, killed.stderr[-2000:])
        assert not (out / "report.html").exists() or kill_at == "report:1"
        outputs.append(killed.stdout)
    assert "resuming mae thermal-real-seed0" in outputs[1]  # the second attempt went on from checkpoint-5
    done = genaug_run(out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "results.csv").read_text() == (uninterrupted / "results.csv").read_text()
    assert not list(out.glob("*/.tmp-*")) and not list(out.glob("*/.checkpoints-*"))  # nothing half-done left
    assert not (out / ".lock").exists()


def test_ctrl_c_stops_with_a_checkpoint_and_says_how_to_resume(uninterrupted, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "genaug", "run", "--out", str(out)]
    for item in [*MICRO, "cyclegan.steps=100000"]:  # a long stage to interrupt
        args += ["--set", item]
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = out / "cyclegan"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.glob(".checkpoints-*/checkpoint-*")):
        time.sleep(0.2)  # wait for training to be under way (its first checkpoint), then press Ctrl-C
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: interrupted: cyclegan") and "run the same genaug command again" in line
    assert "Traceback" not in stderr
    saved = sorted(checkpoints.glob(".checkpoints-*/checkpoint-*"))
    assert saved and not (out / ".lock").exists()


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
