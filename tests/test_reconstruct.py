"""`genaug reconstruct`: a trained MAE's reconstructions of any image files, with the study's fixed masks.

The acceptance bar: on the MAEs of a nano study (both modalities), the test frames written as PNG files
named by their ids get exactly the study's masks, and so the masked MSE of its per_image.csv.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genaug import mae
from genaug.data.images import write_png_folder
from genaug.study.outputs import load_split, read_per_image
from test_bad_inputs import NANO, assert_user_error, explain, invoke, sets  # tests/ is on the path

SIDE, PATCH, PAD = 16, 4, 2  # NANO's data.image_size, the micro MAE's patch, images.grid's padding
GRID = SIDE // PATCH


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """NANO for both modalities, without probes or memory estimates (seconds each), and two MAE steps: a
    split, two MAEs and their evaluations."""
    out = tmp_path_factory.mktemp("study") / "run"
    result = invoke("run", "--out", out, *sets(*NANO, 'study.modalities=["rgb", "thermal"]', "probe.tasks=[]",
                                                "runtime.memory_check=false", "mae.steps=2"))
    assert result.exit_code == 0, explain(result)
    return out


def stage(run: Path, kind: str, modality: str) -> Path:
    (folder,) = (run / kind).glob(f"{modality}-real-seed0-*")
    return folder


@pytest.fixture(scope="module")
def frames(study, tmp_path_factory) -> dict[str, Path]:
    """The study's test frames of each modality as <id>.png (lossless: uint8 frames, 8-bit PNG)."""
    (split,) = (study / "split").iterdir()
    test = load_split(split)["test"]
    root = tmp_path_factory.mktemp("frames")
    for modality in ("rgb", "thermal"):
        write_png_folder(root / modality, test.modality(modality), test.ids)
    return {modality: root / modality for modality in ("rgb", "thermal")}


def read_scores(out: Path) -> dict[str, float]:
    with open(out / "masked_mse.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "masked_mse"]
    return {row["image"]: float(row["masked_mse"]) for row in rows}


def panels(strip: Path) -> list[np.ndarray]:
    """A written strip -> its (original, masked, reconstruction) panels, each (SIDE, SIDE, 3)."""
    array = np.asarray(Image.open(strip))
    assert array.shape == (SIDE + 2 * PAD, 3 * SIDE + 4 * PAD, 3)
    return [array[PAD : PAD + SIDE, PAD + i * (SIDE + PAD) : PAD + i * (SIDE + PAD) + SIDE] for i in range(3)]


def hidden_patches(masked_panel: np.ndarray) -> np.ndarray:
    """(GRID, GRID) bool: which patches the masked panel shows as the flat grey 127."""
    patches = masked_panel.reshape(GRID, PATCH, GRID, PATCH, 3)
    return (patches == 127).all(axis=(1, 3, 4))


@pytest.mark.parametrize("modality", ["rgb", "thermal"])
def test_reconstruct_reproduces_the_studys_per_image_masked_mse(study, frames, modality, tmp_path):
    out = tmp_path / "out"
    mae_dir = stage(study, "mae", modality)
    # the stage folder for one modality, its model/ folder for the other: both are an MAE_DIR
    result = invoke("reconstruct", mae_dir if modality == "thermal" else mae_dir / "model", frames[modality],
                    "--out", out, "--device", "cpu")
    assert result.exit_code == 0, explain(result)
    assert "seed 1234 (the study's)" in result.output and "by 'crop' (the study's)" in result.output
    study_scores = read_per_image(stage(study, "eval", modality))
    expected = dict(zip(study_scores["image_id"].tolist(), study_scores["masked_mse"].tolist()))
    got = read_scores(out)
    assert set(got) == set(expected) and len(got) == 4
    for image_id, value in expected.items():
        assert got[image_id] == pytest.approx(value, rel=1e-6, abs=1e-9), image_id
        assert f"{value:.6g}"[:6] in result.output  # the printed table
    assert len(set(got.values())) == 4  # four images, four different errors: nothing trivially equal

    # each strip: the frame itself, then the study's mask of that id drawn over it in grey
    ids = sorted(got)
    noise = mae.fixed_noise(ids, GRID * GRID, 1234)
    masks = mae.mask_from_noise(noise, 0.75).view(-1, GRID, GRID).bool().numpy()
    for image_id, mask in zip(ids, masks):
        original, masked, reconstruction = panels(out / f"{image_id}.png")
        frame = np.asarray(Image.open(frames[modality] / f"{image_id}.png").convert("RGB"))
        assert np.array_equal(original, frame)
        assert np.array_equal(hidden_patches(masked), mask)
        visible = ~np.repeat(np.repeat(mask, PATCH, 0), PATCH, 1)
        assert np.array_equal(reconstruction[visible], frame[visible])  # the fill-in pasted into the frame
        assert not np.array_equal(reconstruction, frame)


def test_the_mask_follows_the_seed_the_ratio_and_the_file_stem(study, frames, tmp_path):
    mae_dir = stage(study, "mae", "thermal")
    base, other = tmp_path / "base", tmp_path / "other"
    assert invoke("reconstruct", mae_dir, frames["thermal"], "--out", base, "--device", "cpu").exit_code == 0
    result = invoke("reconstruct", mae_dir, frames["thermal"], "--out", other, "--mask-seed", "7", "--device", "cpu")
    assert result.exit_code == 0, explain(result)
    assert "seed 7," in result.output
    first, second = read_scores(base), read_scores(other)
    assert all(first[i] != second[i] for i in first)
    for image_id in first:
        assert not np.array_equal(hidden_patches(panels(base / f"{image_id}.png")[1]),
                                  hidden_patches(panels(other / f"{image_id}.png")[1]))

    half = tmp_path / "half"
    result = invoke("reconstruct", mae_dir, frames["thermal"], "--out", half, "--mask-ratio", "0.5", "--device", "cpu")
    assert result.exit_code == 0, explain(result)
    assert "8 of 16 patches hidden (ratio 0.5)" in result.output
    assert all(hidden_patches(panels(half / f"{i}.png")[1]).sum() == 8 for i in first)

    # the id is the file stem: the same pixels under another name get another mask
    image_id = sorted(first)[0]
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(frames["thermal"] / f"{image_id}.png", renamed / "holiday.png")
    assert invoke("reconstruct", mae_dir, renamed, "--out", tmp_path / "r", "--device", "cpu").exit_code == 0
    assert read_scores(tmp_path / "r")["holiday"] != first[image_id]


def test_an_mae_moved_out_of_its_run_uses_the_config_defaults_and_says_so(study, frames, tmp_path):
    moved = tmp_path / "my-mae"
    shutil.copytree(stage(study, "mae", "rgb") / "model", moved)
    result = invoke("reconstruct", moved, frames["rgb"], "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, explain(result)
    assert "seed 1234 (default: no study beside the MAE)" in result.output
    assert "rgb images fitted to 16x16 by 'crop' (default: no study beside the MAE)" in result.output
    study_scores = read_per_image(stage(study, "eval", "rgb"))
    got = read_scores(tmp_path / "out")
    for image_id, value in zip(study_scores["image_id"], study_scores["masked_mse"]):
        assert got[image_id] == pytest.approx(value, rel=1e-6, abs=1e-9)


def test_larger_images_are_fitted_by_the_studys_policy_smaller_ones_refused(study, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(photos / "wide.jpg")
    Image.fromarray((rng.integers(0, 20, (20, 20)) * 3000).astype(np.uint16)).save(photos / "sixteen.png")
    result = invoke("reconstruct", stage(study, "mae", "thermal"), photos, "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, explain(result)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["masked_mse.csv", "sixteen.png", "wide.png"]
    Image.fromarray(rng.integers(0, 256, (12, 30, 3), dtype=np.uint8)).save(photos / "tiny.png")
    assert_user_error(invoke("reconstruct", stage(study, "mae", "thermal"), photos / "tiny.png", "--out",
                             tmp_path / "o"), "tiny.png", "30x12 is smaller than this MAE's 16x16")


def test_user_errors_are_one_line_with_exit_status_2(study, frames, tmp_path):
    mae_dir = stage(study, "mae", "thermal")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    translator = tmp_path / "translator"
    translator.mkdir()
    (translator / "config.json").write_text(json.dumps({"model": "cyclegan", "image_size": 16}))
    frame = frames["thermal"] / f"{sorted(p.stem for p in frames['thermal'].iterdir())[0]}.png"
    out = tmp_path / "o"
    cases = [
        ([tmp_path / "empty", frame], ["empty", "no saved MAE", "give an mae stage folder"]),
        ([tmp_path / "nowhere", frame], ["nowhere", "no such folder"]),
        ([translator, frame], ["config.json", "'cyclegan' model, not a ViT-MAE"]),
        ([next((study / "split").iterdir()), frame], ["no saved MAE"]),  # a stage folder, not an MAE's
        ([mae_dir, tmp_path / "notes.txt"], ["notes.txt", "unreadable image"]),
        ([mae_dir, tmp_path / "missing.png"], ["missing.png", "no such file"]),
        ([mae_dir, frame, "--mask-ratio", "1.0"], ["--mask-ratio 1.0", "hides 16 of the 16 patches"]),
        ([mae_dir, frame, "--mask-ratio", "0.97"], ["--mask-ratio 0.97", "hides 16 of the 16"]),  # int(0.48)
        ([mae_dir, frame, "--mask-ratio", "0"], ["--mask-ratio 0.0", "hides 0 of the 16"]),
        ([mae_dir, frame, "--mask-seed", "-1"], ["--mask-seed -1"]),
        ([mae_dir, frame, "--resize", "stretch"], ["--resize 'stretch'", "crop, pad, squash"]),
        ([mae_dir, frame, "--device", "tpu"], ["--device 'tpu'"]),
    ]
    for args, fragments in cases:
        assert_user_error(invoke("reconstruct", *args, "--out", out), *fragments)
    assert not out.exists()
    assert_user_error(invoke("reconstruct", mae_dir, frame, "--out", frame), "is a file, not a folder")

    # damaged weights: named, with what to do
    broken = tmp_path / "broken"
    shutil.copytree(mae_dir / "model", broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    assert_user_error(invoke("reconstruct", broken, frame, "--out", out, "--device", "cpu"),
                      "the MAE's weights do not load")
