"""Study fan-out through submitit's local executor: the same results as in-process, failed jobs named and
resubmitted, Ctrl-C on the driver checkpointing every running job, the jobs' share of the cores, and
`genaug status` telling done, running, failed and pending apart."""

import json

import pytest
from typer.testing import CliRunner

from genaug.cli import app

pytest.importorskip("submitit")

# Thermal only, real and real+gen, one seed: split, CycleGAN, 2 MAEs, 3 evaluations (7 jobs, 3 deep; each job
# is a process that imports torch, so every job costs seconds).
MICRO = [
    "data.n_pool=16", "data.n_train=16", "data.n_test=8", "data.scenes.n_frames=60", "data.image_size=16",
    'study.modalities=["thermal"]', "study.seeds=[0]", "study.n_synthetic=8",
    "mae.preset=micro", "mae.batch_size=4", "mae.steps=10", "cyclegan.steps=4", "cyclegan.ngf=8", "cyclegan.ndf=8",
    "cyclegan.n_blocks=1", "cyclegan.d_layers=1", "runtime.log_every=2", "runtime.checkpoint_every=4",
    "runtime.threads=1",  # in-process and in the jobs alike: CPU results are bit-identical only per thread count
    "probe.tasks=[]",  # the probe is a step like eval; without it the job counts stay the ones above
]
runner = CliRunner()


def genaug(*args):
    overrides = [item for s in MICRO for item in ("--set", s)]
    return runner.invoke(app, [*map(str, args), *overrides])


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("inprocess") / "run"
    result = genaug("run", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_local_jobs_give_the_in_process_results_and_a_killed_job_is_resubmitted(in_process, tmp_path, monkeypatch):
    """Every step as a local job, in two runs: the first has each job die at its 6th training step (the
    failures are named, what needs them is not submitted), the second submits only what is missing and
    resumes the killed MAEs from their checkpoints. In all, each of the 7 steps ran once as a job, and
    results.csv equals the in-process run's bit for bit (both at runtime.threads = 1)."""
    out = tmp_path / "run"
    # every job dies at its 6th training step: the MAEs (10 steps, a checkpoint at 4) fail, the CycleGAN
    # (4 steps) and the split finish, and nothing that needs a failed MAE is submitted
    monkeypatch.setenv("GENAUG_KILL_AT", "step:6")
    result = genaug("run", "--out", out, "--launcher", "local", "--max-parallel", "2")
    assert result.exit_code == 2
    assert result.output.count("submitted ") == 5 and result.output.count("done ") == 3  # the MAEs' evaluations wait
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: 2 job(s) failed, first mae thermal-") and "run the same command again" in line
    failed = json.loads((out / ".launch" / "failed.json").read_text())
    assert len(failed) == 2 and all(entry["log"].endswith(".err") for entry in failed.values())
    states = runner.invoke(app, ["status", str(out)])
    assert states.exit_code == 0
    # done: split, CycleGAN and the mean predictor's evaluation; failed: the MAEs; pending: their evaluations
    assert states.output.strip().endswith("3 done, 2 failed, 2 pending")

    monkeypatch.delenv("GENAUG_KILL_AT")
    again = genaug("run", "--out", out, "--launcher", "local", "--max-parallel", "2")
    assert again.exit_code == 0, again.output
    assert again.output.count("submitted ") == 4 and again.output.count("done ") == 4  # only what was missing
    for manifest in out.glob("mae/*/manifest.json"):  # each MAE went on from its checkpoint at step 4
        assert json.loads(manifest.read_text())["timing"]["log.jsonl"]["resumed_from"] == 4
    assert (out / "results.csv").read_text() == (in_process / "results.csv").read_text()
    assert len(list(out.glob("*/*/manifest.json"))) == 7  # each stage output once, by the store's protocol
    assert json.loads((out / ".launch" / "failed.json").read_text()) == {}  # this attempt's failures: none
    status = runner.invoke(app, ["status", str(out)])
    assert status.exit_code == 0 and status.output.strip().endswith("7 done")


def test_bad_launcher_options_are_one_line_errors(tmp_path):
    result = runner.invoke(app, ["run", "--out", str(tmp_path / "x"), "--launcher", "kubernetes"])
    assert result.exit_code == 2 and "--launcher 'kubernetes': use one of inprocess, local, slurm" in result.stderr
    result = runner.invoke(app, ["run", "--out", str(tmp_path / "x"), "--max-parallel", "0"])
    assert result.exit_code == 2 and "--max-parallel 0: must be at least 1" in result.stderr
    result = runner.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 2 and "no plan here" in result.stderr


def test_slurm_jobs_ask_for_what_the_config_says(tmp_path, monkeypatch):
    """No cluster here: a stand-in `srun` on PATH lets submitit build its SLURM executor (nothing is
    submitted), and without one the launcher refuses in one line."""
    import os

    from genaug.config import load_config
    from genaug.errors import UserError
    from genaug.study.launch import executor

    cfg = load_config(None, ['slurm.partition="gpu"', "slurm.gpus_per_job=2", "slurm.cpus_per_job=12",
                             "slurm.mem_gb=64", "slurm.time_min=30"])
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="--launcher slurm: Could not detect \"srun\".*use --launcher local"):
        executor(cfg, "slurm", tmp_path / "logs")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    parameters = executor(cfg, "slurm", tmp_path / "logs")._executor.parameters
    assert (parameters["partition"], parameters["gpus_per_node"], parameters["cpus_per_task"], parameters["mem"],
            parameters["time"]) == ("gpu", 2, 12, "64GB", 30)


def test_local_jobs_share_the_cores_unless_runtime_threads_is_set(monkeypatch):
    """--launcher local: runtime.threads = 0 (the default) becomes cores // --max-parallel, at least 1, in
    the config the jobs run; a runtime.threads that is set is kept, and SLURM jobs keep what they asked
    for. The core count is faked (8) so that the rule shows on any machine; what real jobs got is checked
    in the Ctrl-C test below, from their manifests."""
    import os

    from genaug.config import load_config
    from genaug.study.launch import job_config

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    unset = load_config(None, [])
    assert unset.runtime.threads == 0
    assert [job_config(unset, "local", n).runtime.threads for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert job_config(unset, "slurm", 2).runtime.threads == 0
    assert job_config(load_config(None, ["runtime.threads=3"]), "local", 2).runtime.threads == 3


def running_in_group(pgid):
    """PIDs of the processes of process group `pgid` that have not exited (zombies left out)."""
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_on_the_driver_checkpoints_every_running_job_and_a_resubmitted_job_resumes(tmp_path, capsys,
                                                                                          monkeypatch):
    """Ctrl-C in the terminal (SIGINT to the whole process group: the driver, submitit's controllers, the
    jobs) while two jobs train: the driver alone takes it, each job saves a checkpoint at the step it is
    on and stops, nothing more is submitted, and only once no job is still writing does the driver exit
    130 with one line saying so (no controller's traceback) and release the lock; no process of the run
    is left. Until then `genaug status` shows those two
    steps running. Each resubmitted job (`build_one`, what the same command submits again, as the
    killed-job test above shows) resumes from the checkpoint the Ctrl-C saved. runtime.threads is unset:
    every job ran with cores // --max-parallel threads (its manifest says)."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time
    import tomllib

    from genaug.config import load_config
    from genaug.checkpoints import Checkpoints
    from genaug.engine import request_stop
    from genaug.errors import Interrupted
    from genaug.study.launch import build_one
    from genaug.study.plan import make_plan
    from genaug.study.store import Store

    out = tmp_path / "run"
    settings = [s for s in MICRO if not s.startswith(("runtime.threads", "study.seeds"))]
    settings += ["study.seeds=[0]", "cyclegan.steps=100000", "mae.steps=100000"]  # two long jobs to interrupt
    plan = make_plan(load_config(None, settings))
    # after the split: the CycleGAN, the mean predictor's evaluation and the real-data MAE (the others
    # need the CycleGAN or the MAE), all three at once under --max-parallel 3
    split, cyclegan, mean, mae = plan[:4]
    assert [f"{s.stage} {s.name}" for s in plan[:4]] == ["split split", "cyclegan thermal-cyclegan",
                                                         "eval thermal-mean-predictor", "mae thermal-real-seed0"]
    training = (cyclegan, mae)
    saved = {step.folder: Store(out).checkpoints(step.stage, step.name, step.key) for step in training}
    args = [sys.executable, "-m", "genaug", "run", "--out", str(out), "--launcher", "local", "--max-parallel", "3",
            *[a for s in settings for a in ("--set", s)]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("GENAUG_KILL_AT", None)

    with open(tmp_path / "driver.out", "w") as stdout, open(tmp_path / "driver.err", "w") as stderr:
        driver = subprocess.Popen(args, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None and not (
                all(Checkpoints(folder, 0, 1).latest() for folder in saved.values())
                and (out / mean.folder / "manifest.json").is_file()):
            time.sleep(0.2)  # the evaluation is done and both jobs train (each has a checkpoint): look, press Ctrl-C
        status = runner.invoke(app, ["status", str(out)])
        os.killpg(driver.pid, signal.SIGINT)  # a terminal's Ctrl-C: the driver, its jobs' controllers, the jobs
        driver.wait(timeout=200)  # the driver gives its jobs 120 s to checkpoint and stop
        at_exit = {step.folder: (Checkpoints(folder, 0, 1).latest(), list(folder.parent.glob(".tmp-*")))
                   for step, folder in zip(training, saved.values())}
        deadline = time.time() + 60
        while time.time() < deadline and running_in_group(driver.pid):
            time.sleep(0.2)
        left = running_in_group(driver.pid)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in running_in_group(driver.pid):  # never leave a 100000-step job training
            os.kill(pid, signal.SIGKILL)
    driver_out, driver_err = (tmp_path / "driver.out").read_text(), (tmp_path / "driver.err").read_text()
    assert status.exit_code == 0 and status.output.strip().endswith(f"2 done, 2 running, {len(plan) - 4} pending")
    assert driver.returncode == 130, driver_err[-2000:]
    assert re.fullmatch(rf"error: interrupted: 2 running job\(s\) cancelled, {len(plan) - 4} not submitted; .*"
                        "run the same genaug command again to resume", driver_err.strip().splitlines()[-1])
    assert "Traceback" not in driver_err and left == [] and not (out / ".lock").exists()
    for folder, (latest, building) in at_exit.items():  # when the driver exited: saved, nothing half-written
        assert latest is not None and building == [], (folder, latest, building)
    stopped = {}
    for step in training:  # each job saved a checkpoint at the step it stopped at
        job = re.search(rf"^submitted {step.stage} {step.name} \(job (\d+)\)", driver_out, re.M).group(1)
        log = (out / ".launch" / "logs" / f"{job}_0_log.err").read_text()
        said = re.search(r"stopped at step (\d+) of 100000; a checkpoint at step \1 is in ", log)
        assert said, log[-2000:]
        stopped[step.folder] = int(said.group(1))
        assert Checkpoints(saved[step.folder], 0, 1).latest().name == f"checkpoint-{stopped[step.folder]}"
    share = max(1, (os.cpu_count() or 1) // 3)  # --max-parallel 3
    assert tomllib.loads((out / ".launch" / "config.toml").read_text())["runtime"]["threads"] == share
    for step in (split, mean):  # the jobs that completed
        assert json.loads((out / step.folder / "manifest.json").read_text())["threads"] == share

    # each resubmitted job, here in this process with a Ctrl-C already pending so that it stops after one
    # step: it says it resumes from the checkpoint the Ctrl-C saved, and goes on from that step
    monkeypatch.setenv("COLUMNS", "1000")  # the job's console lines unwrapped
    for step in training:
        capsys.readouterr()
        request_stop()
        with pytest.raises(Interrupted, match=f"stopped at step {stopped[step.folder] + 1} of 100000"):
            build_one(str(out), step.folder)
        rel = saved[step.folder].relative_to(out).as_posix()
        assert f"resuming {step.stage} {step.name} from {rel}/checkpoint-{stopped[step.folder]}\n" in capsys.readouterr().out
