"""Issue 16: a CPU stage whose estimated memory does not fit is refused before it starts, in one line
naming the stage, the estimate, the memory available and the keys that bring it down; nothing already
built is touched. The estimate (study/resources.py: one step traced on the meta device) grows as it
should with batch, side and attention, and leaves the quickstart and the test studies far from a
24 GiB machine's memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genaug.cli import app
from genaug.config import load_config
from genaug.errors import UserError
from genaug.study import resources
from genaug.study.plan import make_plan
from test_bad_inputs import NANO, sets  # tests/ is on the path (rootdir conftest): one nano study

GiB = 1 << 30
runner = CliRunner()


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def need(stage: str, *overrides: str, params: dict | None = None) -> int:
    return resources.memory_need(load_config(None, ["runtime.device=cpu", *overrides]), stage,
                                 params or {"modality": "rgb"})


def test_a_stage_that_does_not_fit_is_refused_in_one_line_and_nothing_built_is_touched(tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = runner.invoke(app, ["run", "--out", str(out), *sets(*NANO)])
    assert first.exit_code == 0, first.output
    (out / "my-notes.txt").write_text("the user's own file\n")
    before = snapshot(out)

    # 100 MB free: the MAE the changed step count asks for (far more than 100 MB with its libraries'
    # overhead) must be refused before it starts; the split it reuses stays as it is
    monkeypatch.setattr(resources, "memory_available", lambda: 100 << 20)
    result = runner.invoke(app, ["run", "--out", str(out), *sets(*NANO, "mae.steps=5")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    line = lines[0]
    for fragment in ("mae thermal-real-seed0", "would need about", "0.1 GB is available",
                     "mae.batch_size = 4 (--set mae.batch_size=2)", "data.image_size = 16 (--set data.image_size=8)",
                     "runtime.memory_check=false"):
        assert fragment in line, f"{fragment!r} not in {line!r}"
    after = snapshot(out)
    changed = [name for name, state in before.items() if after.get(name) != state and name != ".current-plan.json"]
    assert not changed, changed
    # and no new stage folder was begun
    assert {p.name for p in (out / "mae").iterdir()} == {name.split("/")[1] for name in before if name.startswith("mae/")}


def test_the_issue_16_ddpm_is_refused_with_its_keys(monkeypatch):
    """The quickstart's tiny DDPM at the paper's 224^2: attention at 56^2 = 3,136 tokens, batch 32 (and 64 to
    sample): tens of GB, more than a 24 GiB machine has; the line names batch, side and attention."""
    cfg = load_config(None, ["runtime.device=cpu", "data.image_size=224"])
    estimate = resources.memory_need(cfg, "ddpm", {"modality": "rgb"})
    assert estimate > 24 * GiB
    monkeypatch.setattr(resources, "memory_available", lambda: 22 * GiB)
    with pytest.raises(UserError) as refused:
        resources.check_memory("ddpm rgb", estimate, "ddpm", cfg)
    line = str(refused.value)
    assert "\n" not in line
    for fragment in ("ddpm rgb would need about", "22.0 GB is available", "ddpm.batch_size = 32 (--set ddpm.batch_size=16)",
                     "ddpm.sample_batch_size = 64 (--set ddpm.sample_batch_size=32)",
                     "ddpm.image_size = 0 (the data's 224; --set ddpm.image_size=112)",
                     "ddpm.attention_levels = [-1] (--set ddpm.attention_levels=[]"):
        assert fragment in line, f"{fragment!r} not in {line!r}"
    # not on CUDA (its own out-of-memory answer), and not when the user turns it off
    resources.check_memory("ddpm rgb", estimate, "ddpm", cfg.model_copy(update={
        "runtime": cfg.runtime.model_copy(update={"memory_check": False})}))
    monkeypatch.setattr(resources, "memory_available", lambda: None)  # not Linux: not checked
    resources.check_memory("ddpm rgb", estimate, "ddpm", cfg)


def test_the_estimate_grows_with_batch_side_and_attention():
    tiny = ["ddpm.sample_batch_size=1"]  # the training step alone
    by_batch = [need("ddpm", *tiny, "data.image_size=64", f"ddpm.batch_size={b}") for b in (8, 16, 32)]
    assert by_batch[0] < by_batch[1] < by_batch[2]
    # roughly linear in the batch: equal steps for equal increments (the fixed part cancels)
    step_small, step_large = by_batch[1] - by_batch[0], (by_batch[2] - by_batch[1]) / 2
    assert 0.8 < step_large / step_small < 1.25, by_batch
    by_side = [need("ddpm", *tiny, f"data.image_size={s}") for s in (32, 64, 96)]
    assert by_side[0] < by_side[1] < by_side[2]
    # attention at a finer level holds (4x the tokens)^2 scores; none at all holds none
    levels = [need("ddpm", *tiny, "data.image_size=64", f"ddpm.attention_levels={a}") for a in ("[]", "[-1]", "[1]")]
    assert levels[0] < levels[1] < levels[2]
    assert levels[2] - levels[0] > 4 * (levels[1] - levels[0])
    # the sampling batch counts where it dominates
    assert need("ddpm", "data.image_size=64", "ddpm.sample_batch_size=256") > need("ddpm", "data.image_size=64")
    assert need("mae", "mae.batch_size=64") > need("mae", "mae.batch_size=8")
    assert need("mae", "mae.preset=small") > need("mae", "mae.preset=tiny")


@pytest.mark.parametrize("overrides", [[], ["ddpm.preset=small"]], ids=["quickstart", "small-ddpm"])
def test_the_quickstart_stages_are_far_below_a_24_gib_machine(overrides):
    cfg = load_config(None, ["runtime.device=cpu", *overrides])
    for step in make_plan(cfg):
        estimate = resources.memory_need(cfg, step.stage, step.params)
        assert 0 < estimate < 2 * GiB, (step.stage, step.name, estimate)
        resources.check_memory(step.stage, estimate, step.stage, cfg)  # never refused here (24 GiB or not)
        if step.stage in ("ddpm", "mae", "cyclegan"):  # the traced part is there: more than the fixed overhead
            assert estimate > resources.OVERHEAD + 10 * (1 << 20), step.stage


def test_available_memory_is_capped_by_the_cgroup(tmp_path, monkeypatch):
    real = resources.memory_available()
    if real is None:
        pytest.skip("no /proc/meminfo here")
    assert 0 < real
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text("1000000\n")
    usage.write_text("400000\n")
    monkeypatch.setattr(resources, "_cgroup_files", lambda: [(limit, usage)])
    assert resources.memory_available() == min(real, 600000) or resources.memory_available() <= 600000
    limit.write_text("max\n")  # v2's "no limit"
    assert resources.memory_available() > 600000
