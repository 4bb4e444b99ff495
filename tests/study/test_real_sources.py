"""Studies on files: a KAIST-layout tree and plain folders, at micro size, through the CLI."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genaug.cli import app
from genaug.data import scenes
from genaug.data.kaist import KaistSource

from .test_study import MICRO

runner = CliRunner()
VIDEOS = [("set00", "V000", 40), ("set03", "V000", 40), ("set06", "V000", 12)]  # day, night, test


@pytest.fixture(scope="module")
def kaist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kaist")
    rgb, thermal, tags = scenes.render_frames(7, range(sum(n for *_, n in VIDEOS)), 80, 64)
    k, lines = 0, {"set00": [], "set03": [], "set06": []}
    for set_name, video, n in VIDEOS:
        for folder in ("visible", "lwir"):
            (root / "images" / set_name / video / folder).mkdir(parents=True)
        (root / "annotations" / set_name / video).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rgb[k]).save(root / "images" / set_name / video / "visible" / f"I{i:05d}.jpg")
            lwir = np.repeat(thermal[k][..., None], 3, axis=2)  # KAIST's LWIR JPEGs: 3 equal channels
            Image.fromarray(lwir).save(root / "images" / set_name / video / "lwir" / f"I{i:05d}.jpg")
            # bbGt annotations (CRLF): one tall `person` box per pedestrian of the scene
            boxes = ["person 10 10 20 60 0 0 0 0 0 0 0"] * tags[k]["n_people"]
            (root / "annotations" / set_name / video / f"I{i:05d}.txt").write_bytes(
                "".join(f"{line}\r\n" for line in ["% bbGt version=3", *boxes]).encode())
            lines[set_name].append(f"{set_name}/{video}/I{i:05d}")
            k += 1
    (root / "imageSets").mkdir()
    train = lines["set00"] + lines["set03"]
    (root / "imageSets" / "train-all-02.txt").write_bytes("".join(f"{x}\r\n" for x in train).encode())
    (root / "imageSets" / "test-all-20.txt").write_bytes("".join(f"{x}\r\n" for x in lines["set06"]).encode())
    return root


def kaist_args(root, out, *extra):
    settings = [*MICRO, "data.source=kaist", f"data.kaist.root={json.dumps(str(root))}",
                "data.kaist.train_split=train-all-02", "data.kaist.test_split=test-all-20.txt",
                "data.n_test=8", "data.n_train=24", "data.n_pool=40", "study.n_synthetic=8", *extra]
    return ["run", "--out", str(out), *[a for s in settings for a in ("--set", s)]]


def test_kaist_study_runs_and_keeps_the_official_test_split(kaist_root, tmp_path, monkeypatch):
    decoded = []
    original = KaistSource.load
    monkeypatch.setattr(KaistSource, "load", lambda self, refs: decoded.append(len(refs)) or original(self, refs))
    result = runner.invoke(app, kaist_args(kaist_root, tmp_path / "a"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["data"]["leakage_check"].startswith("passed")
    assert summary["data"]["counts"] == {"test": 8, "train": 24, "pool": 40}
    split = json.loads(next((tmp_path / "a" / "split").glob("*/split.json")).read_text())["ids"]
    assert all(i.startswith("set06/") for i in split["test"])
    assert not any(i.startswith("set06/") for i in split["train"] + split["pool"])
    assert "Leakage check passed" in (tmp_path / "a" / "report.md").read_text()
    for block in summary["modalities"].values():
        for condition in block["conditions"].values():
            assert condition["test_mse_mean"] < block["baseline_mean_predictor_mse"]
    assert sorted(decoded) == [8, 24, 40]

    # A second study on the same frames (another run directory, another MAE) decodes nothing.
    decoded.clear()
    result = runner.invoke(app, kaist_args(kaist_root, tmp_path / "b", "mae.steps=5"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert decoded == []
    manifest = json.loads(next((tmp_path / "b" / "split").glob("*/manifest.json")).read_text())
    assert manifest["decoded_from_cache"] == ["test", "train", "pool"]


def test_kaist_day_only_selection_and_three_channel_thermal(kaist_root, tmp_path):
    result = runner.invoke(app, kaist_args(kaist_root, tmp_path / "day", "data.kaist.time=day", "data.n_pool=16",
                                           "data.thermal_channels=3", 'study.modalities=["thermal"]',
                                           'study.conditions=["real"]', "study.seeds=[0]"),
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    split = json.loads(next((tmp_path / "day" / "split").glob("*/split.json")).read_text())["ids"]
    assert all(i.startswith("set00/") for i in split["train"] + split["pool"])
    from transformers import ViTMAEForPreTraining

    model = ViTMAEForPreTraining.from_pretrained(next((tmp_path / "day" / "mae").glob("*/model")))
    assert model.config.num_channels == 3


def test_kaist_not_enough_frames_names_the_counts(kaist_root, tmp_path):
    result = runner.invoke(app, kaist_args(kaist_root, tmp_path / "x", "data.kaist.time=night"))
    assert result.exit_code == 2
    assert "data.n_train + data.n_pool = 64 of 40 training frames" in result.output


def test_folder_study_on_a_written_scenes_folder(tmp_path):
    assert runner.invoke(app, ["data", "scenes", str(tmp_path / "pairs"), "--n", "90", "--width", "64",
                               "--height", "64"]).exit_code == 0
    settings = [*MICRO, "data.source=folder", f"data.folder.rgb={json.dumps(str(tmp_path / 'pairs' / 'rgb'))}",
                f"data.folder.thermal={json.dumps(str(tmp_path / 'pairs' / 'thermal'))}", "data.resize=pad",
                "data.n_pool=40", "data.n_train=32", "data.n_test=16"]
    result = runner.invoke(app, ["run", "--out", str(tmp_path / "run"), *[a for s in settings for a in ("--set", s)]],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["resize"] == "pad" and summary["data"]["counts"]["test"] == 16


def test_thermal_only_folder_refuses_rgb_modality(tmp_path):
    assert runner.invoke(app, ["data", "scenes", str(tmp_path / "pairs"), "--n", "4"]).exit_code == 0
    result = runner.invoke(app, ["validate", "--set", "data.source=folder",
                                 "--set", f"data.folder.thermal={json.dumps(str(tmp_path / 'pairs' / 'thermal'))}"])
    assert result.exit_code == 2
    assert "study.modalities lists rgb" in result.output and "Traceback" not in result.output


def damage(root, how):
    """Copy-free damage to a private tree; returns the text the one-line error must contain."""
    first = root / "images" / "set00" / "V000"
    if how == "truncated":
        path = first / "visible" / "I00003.jpg"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return str(path)
    if how == "zero-byte":
        (first / "lwir" / "I00004.jpg").write_bytes(b"")
        return "I00004.jpg"
    if how == "missing partner":
        (first / "lwir" / "I00005.jpg").unlink()
        return 'data.missing = "skip"'
    if how == "split line without frame":
        with open(root / "imageSets" / "train-all-02.txt", "ab") as f:
            f.write(b"set00/V000/I99999\r\n")
        return "set00/V000/I99999"
    if how == "missing annotation":
        path = root / "annotations" / "set00" / "V000" / "I00007.txt"
        path.unlink()
        return str(path)
    if how == "malformed annotation":
        path = root / "annotations" / "set03" / "V000" / "I00002.txt"
        path.write_bytes(b"% bbGt version=3\r\nperson 1 2 three 60 0 0 0 0 0 0 0\r\n")
        return f"{path} line 2"
    if how == "missing root":
        import shutil

        shutil.rmtree(root / "images")
        return "images"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "zero-byte", "missing partner", "split line without frame",
                                 "missing annotation", "malformed annotation", "missing root"])
def test_bad_kaist_data_is_one_line_before_any_training(kaist_root, tmp_path, how):
    """`genaug run` on damaged KAIST data ends with one line naming the damage (exit 2, no traceback) and
    trains nothing: its run directory holds at most the plan `genaug status` reads (and an empty split/
    folder), no stage output, no half-built folder, no checkpoint, no lock."""
    import shutil

    root = tmp_path / "kaist"
    shutil.copytree(kaist_root, root)
    needle = damage(root, how)
    out = tmp_path / "run"
    result = runner.invoke(app, kaist_args(root, out, "data.n_pool=56"))  # every training frame selected
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert lines[-1].startswith("error:") and needle in lines[-1] and "Traceback" not in result.output
    left = {p.relative_to(out).as_posix() for p in out.rglob("*")}
    assert left <= {".current-plan.json", "split"}, sorted(left)


@pytest.mark.parametrize("how", ["missing annotation", "malformed annotation", "truncated"])
def test_validate_reads_what_the_run_would(kaist_root, tmp_path, how):
    """`genaug validate` reads the probe's annotations as the split stage will (and decodes every image):
    damage a run would stop on is named by validate first, in the same one line; an intact tree validates
    with each set's label balance."""
    import shutil

    root = tmp_path / "kaist"
    shutil.copytree(kaist_root, root)
    args = ["validate", *kaist_args(root, tmp_path / "unused", "data.n_pool=56")[3:]]
    intact = runner.invoke(app, args)
    assert intact.exit_code == 0, intact.output
    shown = json.loads(intact.output[intact.output.index("{"):intact.output.rindex("}") + 1])
    balance = shown["labels"]["balance"]
    assert set(balance) == {"pool", "train", "test"}
    assert {sum(counts["person"].values()) for counts in balance.values()} <= {56, 24, 8}
    assert any(counts["person"]["person"] for counts in balance.values())
    needle = damage(root, how)
    result = runner.invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert lines[-1].startswith("error:") and needle in lines[-1] and "Traceback" not in result.output
    assert not (tmp_path / "unused").exists()
