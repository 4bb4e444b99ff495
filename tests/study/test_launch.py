"""Study fan-out through submitit's local executor: the same results as in-process, failed jobs named and
resubmitted, and `genaug status` telling done, failed and pending apart."""

import json

import pytest
from typer.testing import CliRunner

from genaug.cli import app

pytest.importorskip("submitit")

# Thermal only, real and real+gen, two seeds: split, CycleGAN, 4 MAEs, 5 evaluations (11 jobs, 3 deep).
MICRO = [
    "data.n_pool=16", "data.n_train=16", "data.n_test=8", "data.scenes.n_frames=60", "data.image_size=16",
    'study.modalities=["thermal"]', "study.seeds=[0, 1]", "study.n_synthetic=8",
    "mae.preset=micro", "mae.batch_size=4", "mae.steps=10", "cyclegan.steps=4", "cyclegan.ngf=8", "cyclegan.ndf=8",
    "cyclegan.n_blocks=1", "cyclegan.d_layers=1", "runtime.log_every=2", "runtime.checkpoint_every=4",
    "runtime.threads=1",  # in-process and in the jobs alike: CPU results are bit-identical only per thread count
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


def test_local_jobs_give_the_in_process_results(in_process, tmp_path):
    out = tmp_path / "run"
    result = genaug("run", "--out", out, "--launcher", "local", "--max-parallel", "2")
    assert result.exit_code == 0, result.output
    assert result.output.count("submitted ") == 11 and result.output.count("done ") == 11
    assert (out / "results.csv").read_text() == (in_process / "results.csv").read_text()
    assert len(list(out.glob("*/*/manifest.json"))) == 11  # each stage output once, by the store's protocol
    assert json.loads((out / ".launch" / "failed.json").read_text()) == {}
    status = runner.invoke(app, ["status", str(out)])
    assert status.exit_code == 0 and status.output.strip().endswith("11 done")


def test_a_killed_job_is_named_and_resubmitted_by_the_next_run(in_process, tmp_path, monkeypatch):
    out = tmp_path / "run"
    # every job dies at its 6th training step: the MAEs (10 steps, a checkpoint at 4) fail, the CycleGAN
    # (4 steps) and the split finish, and nothing that needs a failed MAE is submitted
    monkeypatch.setenv("GENAUG_KILL_AT", "step:6")
    result = genaug("run", "--out", out, "--launcher", "local", "--max-parallel", "2")
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: 4 job(s) failed, first mae thermal-") and "run the same command again" in line
    failed = json.loads((out / ".launch" / "failed.json").read_text())
    assert len(failed) == 4 and all(entry["log"].endswith(".err") for entry in failed.values())
    states = runner.invoke(app, ["status", str(out)])
    assert states.exit_code == 0
    # done: split, CycleGAN and the mean predictor's evaluation; failed: the MAEs; pending: their evaluations
    assert states.output.strip().endswith("3 done, 4 failed, 4 pending")

    monkeypatch.delenv("GENAUG_KILL_AT")
    again = genaug("run", "--out", out, "--launcher", "local", "--max-parallel", "2")
    assert again.exit_code == 0, again.output
    assert again.output.count("submitted ") == 8  # only what was missing
    for manifest in out.glob("mae/*/manifest.json"):  # each MAE went on from its checkpoint at step 4
        assert json.loads(manifest.read_text())["timing"]["log.jsonl"]["resumed_from"] == 4
    assert (out / "results.csv").read_text() == (in_process / "results.csv").read_text()


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
