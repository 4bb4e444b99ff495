"""runtime.log_with: every training stage's logged rows and learning rates, live in a tracker.

A tiny study (a pix2pix and two MAEs, thermal) logs to TensorBoard: one run per training stage under
RUN_DIR/tracking/<stage folder>, holding exactly the stage's log.jsonl rows at the same steps; the
setting enters no stage key; a tracker that is not installed is one line before anything runs; and
a resumed or rolled-back loop continues its run without the rows the checkpoint undid.
"""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # the test extra's
from typer.testing import CliRunner

from genaug import distributed, tracking
from genaug.cli import app
from genaug.config import RuntimeConfig, load_config
from genaug.engine import Trainer
from test_bad_inputs import assert_user_error  # tests/ is on the path (rootdir conftest)

runner = CliRunner()

TINY = [
    "data.n_pool=4", "data.n_train=8", "data.n_test=4", "data.scenes.n_frames=20", "data.image_size=16",
    'study.modalities=["thermal"]', 'study.conditions=["real", "real+gen"]', 'study.generators.thermal=["pix2pix"]',
    "study.n_synthetic=4", "study.seeds=[0]", "probe.tasks=[]",
    "pix2pix.steps=4", "pix2pix.batch_size=4", "pix2pix.ngf=4", "pix2pix.ndf=4", "pix2pix.num_downs=2",
    "pix2pix.d_layers=1",
    "mae.preset=micro", "mae.steps=4", "mae.warmup_steps=2", "mae.batch_size=4",
    "runtime.log_every=2", "runtime.checkpoint_every=2", "runtime.device=cpu",
]


def genaug(out: Path, *settings: str):
    return runner.invoke(app, ["run", "--out", str(out), *[a for s in settings for a in ("--set", s)]])


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of a TensorBoard run folder, as TensorBoard itself reads it (purges applied)."""
    events = EventAccumulator(str(run))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def log_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_as_log(run: Path, log: Path) -> dict[str, list[tuple[int, float]]]:
    """The run's loss scalars are log.jsonl's rows, step for step (TensorBoard keeps float32s)."""
    rows = log_rows(log)
    assert rows, log
    found = scalars(run)
    for name in [k for k in rows[0] if k != "step"]:
        assert found[name] == [(r["step"], float(np.float32(r[name]))) for r in rows], name
    return found


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tracked") / "run"
    result = genaug(out, *TINY, "runtime.log_with=tensorboard")
    assert result.exit_code == 0, result.output
    return out


def training_folders(out: Path) -> list[str]:
    plan = json.loads((out / "plan.json").read_text())
    return [s["folder"] for s in plan["steps"] if (out / s["folder"] / "log.jsonl").is_file()]


def test_every_training_stage_logs_its_rows_and_learning_rates_to_tensorboard(study):
    folders = training_folders(study)
    assert sorted(f.split("/")[0] for f in folders) == ["mae", "mae", "pix2pix"]
    # one run per training stage, named by its final folder, and none for the others (split, eval)
    runs = sorted({p.parent.relative_to(study / "tracking").as_posix()
                   for p in (study / "tracking").rglob("events.out.tfevents.*")})
    assert runs == sorted(folders)
    for folder in folders:
        found = assert_same_as_log(study / "tracking" / folder, study / folder / "log.jsonl")
        steps = [r["step"] for r in log_rows(study / folder / "log.jsonl")]
        lrs = {tag: values for tag, values in found.items() if tag.startswith("lr/")}
        expected = {"lr/optimizer_g", "lr/optimizer_d"} if folder.startswith("pix2pix") else {"lr/optimizer"}
        assert set(lrs) == expected, folder
        for values in lrs.values():
            assert [s for s, _ in values] == steps and all(0 < v <= 1e-2 for _, v in values), (folder, values)
    # the rate a row's step used: the MAE's step 2 is half way through its 2 warm-up steps
    mae = next(f for f in folders if f.startswith("mae/"))
    assert dict(scalars(study / "tracking" / mae)["lr/optimizer"])[2] == pytest.approx(
        load_config(study / "config.toml").mae.lr / 2)


def test_log_with_changes_no_stage_key(study, tmp_path):
    """The same study with log_with = "none" reuses every stage: nothing trains, nothing is tracked anew."""
    out = tmp_path / "run"
    shutil.copytree(study, out)
    manifests = {p: p.read_bytes() for p in out.glob("*/*/manifest.json")}
    events = sorted(p.name for p in (out / "tracking").rglob("events.out.tfevents.*"))
    result = genaug(out, *TINY, "runtime.log_with=none")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "plan.json").read_text()) == json.loads((study / "plan.json").read_text())
    assert {p: p.read_bytes() for p in out.glob("*/*/manifest.json")} == manifests
    assert sorted(p.name for p in (out / "tracking").rglob("events.out.tfevents.*")) == events


def test_a_tracker_that_is_not_installed_fails_in_one_line_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "available", lambda name: False)
    out = tmp_path / "run"
    result = genaug(out, *TINY, "runtime.log_with=tensorboard")
    assert_user_error(result, "runtime.log_with", "'tensorboard' is not installed", "pip install tensorboard",
                          'runtime.log_with = "none"')
    assert not out.exists()


@pytest.mark.parametrize("name", [n for n in ("wandb", "aim", "mlflow") if not tracking.available(n)][:1])
def test_a_real_tracker_that_is_not_installed(tmp_path, name):
    """accelerate's own availability check, unpatched, on a tracker this environment lacks."""
    out = tmp_path / "run"
    assert_user_error(genaug(out, *TINY, f"runtime.log_with={name}"), f"'{name}' is not installed")
    assert not out.exists()


def test_an_unknown_tracker_names_the_choices(tmp_path):
    assert_user_error(genaug(tmp_path / "run", *TINY, "runtime.log_with=tensorbord"), "runtime.log_with",
                          "'tensorbord'", "'tensorboard'")


def test_the_choices_are_accelerates_trackers():
    from accelerate.utils import LoggerType

    assert set(tracking.TRACKERS) == set(LoggerType.list()) - {"all"}
    field = RuntimeConfig.model_fields["log_with"]
    assert set(typing.get_args(field.annotation)) == {tracking.OFF, *tracking.TRACKERS}
    assert field.default == tracking.OFF


class Decaying:
    """One weight trained towards 3 by SGD at lr 0.1 / step: each step's rate is known."""

    def __init__(self, poison_step: int | None = None, crash_step: int | None = None):
        torch.manual_seed(0)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.optimizer = torch.optim.SGD([self.weight], lr=0.1)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1 / (1 + step))
        self.poison_step, self.crash_step = poison_step, crash_step

    def state(self):
        return {"optimizer": self.optimizer, "schedule": self.schedule, "model": torch.nn.ParameterDict({"w": self.weight})}

    def step(self, i):
        if i + 1 == self.crash_step:
            raise RuntimeError("killed")
        loss = (self.weight - 3).pow(2).sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        if i + 1 == self.poison_step:
            self.poison_step = None  # once: the redone step is finite
            loss = loss * float("nan")
        return {"loss": loss}


def toy_trainer(tmp_path: Path, **runtime) -> Trainer:
    cfg = RuntimeConfig(device="cpu", log_every=1, checkpoint_every=3, log_with="tensorboard", **runtime)
    return Trainer(cfg, 8, tmp_path / "log.jsonl", "toy", checkpoint_dir=tmp_path / "ckpt",
                   tracker=tracking.Run("tensorboard", tmp_path / "run", "toy/run-key"))


def test_a_resumed_loop_continues_its_run_without_the_rows_its_checkpoint_undid(tmp_path):
    """Killed during step 6: rows 1-5 are logged, the checkpoint is step 3's. The resume logs 4-8 again
    into the same run, whose rows 4 and 5 from before the kill TensorBoard drops (purge_step): it reads
    each step once, as log.jsonl has it, with the rate each step used."""
    toy = Decaying(crash_step=6)
    with pytest.raises(RuntimeError, match="killed"):
        toy_trainer(tmp_path).fit(toy.step, toy.state())
    run = tmp_path / "run" / "tracking" / "toy" / "run-key"
    assert [s for s, _ in scalars(run)["loss"]] == [1, 2, 3, 4, 5]  # written out despite the crash
    toy = Decaying()
    toy_trainer(tmp_path).fit(toy.step, toy.state())
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # one run, two sessions
    found = assert_same_as_log(run, tmp_path / "log.jsonl")
    assert [r["step"] for r in log_rows(tmp_path / "log.jsonl")] == list(range(1, 9))
    assert found["lr/optimizer"] == [(i, float(np.float32(0.1 / i))) for i in range(1, 9)]


def test_a_rolled_back_loop_logs_the_redone_rows_in_place_of_the_undone_ones(tmp_path):
    """A non-finite loss at step 5 sends the loop back to step 3's checkpoint at half the rate: rows 4
    (logged before) and on are redone at other values, and the run shows only the redone ones."""
    toy = Decaying(poison_step=5)
    trainer = toy_trainer(tmp_path, on_nonfinite="rollback")
    trainer.fit(toy.step, toy.state())
    assert trainer.notes and "rolled back" in trainer.notes[0]
    found = assert_same_as_log(tmp_path / "run" / "tracking" / "toy" / "run-key", tmp_path / "log.jsonl")
    rates = dict(found["lr/optimizer"])
    assert rates[3] == pytest.approx(0.1 / 3) and rates[4] == pytest.approx(0.05 / 4)


def test_only_the_main_process_tracks(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    assert toy_trainer(tmp_path).tracker is None
