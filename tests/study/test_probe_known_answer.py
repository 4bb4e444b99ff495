"""The probe's known answer on scenes (configs/probe_controls.toml's regime, one seed): a trained MAE's
frozen features beat a random-init encoder of the same architecture. It can fail: an MAE that learned
nothing, features taken from the wrong place, or a floor that is not random."""

import json
from pathlib import Path

from typer.testing import CliRunner

from genaug.cli import app

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "probe_controls.toml"


def test_a_trained_maes_features_beat_the_random_init_floor(tmp_path):
    out = tmp_path / "run"
    settings = ["study.seeds=[0]", 'study.conditions=["real"]', 'probe.tasks=["car"]']
    result = CliRunner().invoke(app, ["run", str(CONFIG), "--out", str(out),
                                      *[a for s in settings for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    car = json.loads((out / "summary.json").read_text())["modalities"]["thermal"]["probe"]["car"]
    trained, floor = car["conditions"]["real"], car["floors"]["random-init"]["linear"]
    # measured over data seeds 0-2: trained 0.63-0.66 balanced accuracy, the floor 0.44-0.50
    assert trained["balanced_accuracy_mean"] > floor["balanced_accuracy"] + 0.08, (trained, floor)
    assert trained["auroc_mean"] > floor["auroc"] + 0.08, (trained, floor)
    assert "no better than a random-init" not in result.output
    assert "probe thermal car: real's features beat a random-init encoder's" in " ".join(result.output.split())
