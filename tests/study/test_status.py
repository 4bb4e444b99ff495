"""`genaug status RUN_DIR` from the files a run leaves, without running one: done (the step's manifest),
running (its temporary folder, while the lock's process is alive), failed (a launcher job's entry in
`.launch/failed.json`), pending (anything else, with the checkpoint it will resume from). Live runs are
looked at in tests/study/test_resume.py (in-process) and tests/study/test_launch.py (jobs)."""

import socket
import subprocess
import sys

from typer.testing import CliRunner

from genaug.cli import app
from genaug.config import load_config
from genaug.study.launch import FAILED_FILE, LAUNCH_DIR
from genaug.study.plan import make_plan
from genaug.study.runner import CURRENT_PLAN_FILE
from genaug.study.status import step_states
from genaug.study.store import LOCK, Store, write_json_atomic


def states(run_dir):
    return {row["folder"]: (row["state"], row["detail"]) for row in step_states(run_dir)}


def test_status_tells_each_state_from_the_files_a_run_leaves(tmp_path):
    plan = make_plan(load_config(None, ['study.modalities=["thermal"]', "study.seeds=[0]"]))
    split, cyclegan, mean, mae = plan[:4]
    assert (split.stage, cyclegan.stage, mean.name, mae.stage) == ("split", "cyclegan", "thermal-mean-predictor", "mae")
    out = tmp_path / "run"
    store = Store(out)
    write_json_atomic(out / CURRENT_PLAN_FILE, {"steps": [step.describe() for step in plan]})
    # the split is complete
    with store.building(split.stage, split.name, split.key, {}) as (folder, _):
        (folder / "split.json").write_text("{}")
    # the CycleGAN's folder was renamed into place by an attempt killed before it wrote the manifest: not done
    (out / cyclegan.folder / "model").mkdir(parents=True)
    (store.checkpoints(cyclegan.stage, cyclegan.name, cyclegan.key) / "checkpoint-8").mkdir(parents=True)
    # a launcher job for the mean predictor's evaluation failed
    (out / LAUNCH_DIR).mkdir()
    log = str(tmp_path / "logs" / "4242_0_log.err")
    write_json_atomic(out / LAUNCH_DIR / FAILED_FILE, {mean.folder: {"step": f"eval {mean.name}", "job": "4242",
                                                                     "log": log, "state": "FINISHED"}})
    # the first MAE's checkpoints so far
    for step in (4, 8):
        (store.checkpoints(mae.stage, mae.name, mae.key) / f"checkpoint-{step}").mkdir(parents=True)

    rest = {step.folder: ("pending", "") for step in plan[4:]}
    with store.locked():  # this live process holds the lock: a run builds here, now the first MAE
        store.temporary(mae.stage, mae.name, mae.key).mkdir(parents=True)
        live = states(out)
        shown = CliRunner().invoke(app, ["status", str(out)])
    done = live.pop(split.folder)
    assert done[0] == "done" and done[1].endswith(" s") and live == {
        cyclegan.folder: ("pending", "resumes from checkpoint-8"),
        mean.folder: ("failed", f"job 4242: {log}"),
        mae.folder: ("running", "at checkpoint-8"),
        **rest,
    }
    assert shown.exit_code == 0 and shown.output.strip().endswith(f"1 done, 1 running, 1 failed, {len(rest) + 1} pending")

    # no run holds the directory (the lock released, or left by a process that is gone): the half-built
    # MAE is a killed attempt's, pending and resuming from its last checkpoint
    released = states(out)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK).write_text(f"{int(gone.stdout)} {socket.gethostname()}")
    stale = states(out)
    for after in (released, stale):
        assert after[mae.folder] == ("pending", "resumes from checkpoint-8")
        assert after[split.folder][0] == "done" and after[mean.folder][0] == "failed"
