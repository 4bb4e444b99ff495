"""Generators from outside the study (`folder:<path>`, `pipeline:<path or hub id>`) and the thermal DDPM,
end to end at micro size (issue 18).

- a `folder:` of frames of another scenes seed gives its own condition, and its synthetic set is the
  folder's deterministic subset fitted by the data policy; a changed file rebuilds it and its MAEs only;
- a DDPM saved by genaug's own stage, used as `pipeline:<folder>`, samples genaug's own images;
- `ddpm` under thermal trains on thermal and samples thermal with data.thermal_channels channels;
- bad generator entries end in one line, exit 2, no traceback, nothing already built lost;
- 16-bit thermal in a `folder:` follows data.folder.thermal_16bit.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from genaug.config import load_config
from genaug.data.images import fit_square, read_thermal, to_tensor
from genaug.generators import external
from genaug.study.outputs import load_synthetic
from genaug.study.plan import make_plan
from study.test_study import MICRO, completed_steps, overrides, run  # tests/ is on the path (rootdir conftest)
# the nano study's completed run and its private copies (fixtures), and its way of asserting a one-line error
from test_bad_inputs import (NANO, PROGRESS_RECORDS, assert_user_error, completed_run, invoke,  # noqa: F401
                             produced, sets, snapshot)

N_FILES = 24  # more than study.n_synthetic (16): the study draws a subset
FOLDER = "other"  # the folder's name, and so its condition real+gen:other

# One seed, no probe, short MAEs, a smaller DDPM batch: every stage still runs for real. One thread: on a
# busy 2-core machine two threads per step ran the same study 4x slower (runtime.threads keys nothing).
FAST = ["study.seeds=[0]", "probe.tasks=[]", "mae.steps=10", "ddpm.batch_size=8", "runtime.threads=1"]
RGB = [*FAST, 'study.modalities=["rgb"]']


def toml_list(*items: str) -> str:
    return json.dumps(list(items))  # a TOML array of strings


def rgb_generators(folder) -> list[str]:
    return [*RGB, f"study.generators.rgb={toml_list('ddpm', f'folder:{folder}')}"]


def one(run_dir, pattern: str):
    found = sorted(run_dir.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scenes_folder(tmp_path_factory):
    """N_FILES frames of another scenes seed (40 x 32: not square, so data.resize matters), as PNGs."""
    from genaug.data.scenes import render_frames

    folder = tmp_path_factory.mktemp("made-elsewhere") / FOLDER
    folder.mkdir()
    rgb, _, _ = render_frames(seed=7, indices=range(N_FILES), width=40, height=32)
    for i, image in enumerate(rgb):
        Image.fromarray(image).save(folder / f"frame_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def rgb_study(tmp_path_factory, scenes_folder):
    out = tmp_path_factory.mktemp("rgb") / "run"
    result = run("run", "--out", str(out), *overrides(rgb_generators(scenes_folder)))
    assert result.exit_code == 0, result.output
    return out


THERMAL_DDPM = [*FAST, 'study.modalities=["thermal"]', 'study.generators.thermal=["ddpm"]']


@pytest.fixture(scope="module")
def thermal_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("thermal") / "run"
    result = run("run", "--out", str(out), *overrides(THERMAL_DDPM))
    assert result.exit_code == 0, result.output
    return out


def expected_folder_images(files, cfg) -> tuple[list[str], torch.Tensor]:
    """The study's folder images, computed without genaug's reader: n of the files drawn with the study
    seed (in name order), each decoded by PIL and fitted to data.image_size by data.resize."""
    n, seed = cfg.study.n_synthetic, cfg.seed
    chosen = sorted(np.random.default_rng(seed).choice(len(files), size=n, replace=False).tolist())
    paths = [files[i] for i in chosen]
    fitted = [fit_square(np.asarray(Image.open(p).convert("RGB")), cfg.data.image_size, cfg.data.resize) for p in paths]
    return [p.stem for p in paths], to_tensor(np.stack(fitted))


# --------------------------------------------------------------------------------------------- folder:


def test_folder_gives_its_condition_with_its_chosen_files_fitted_by_the_data_policy(rgb_study, scenes_folder):
    summary = json.loads((rgb_study / "summary.json").read_text())
    assert set(summary["modalities"]) == {"rgb"}
    conditions = summary["modalities"]["rgb"]["conditions"]
    assert set(conditions) == {"real", "real+gen:ddpm", f"real+gen:{FOLDER}"}
    assert conditions[f"real+gen:{FOLDER}"]["n_seeds"] == 1
    assert set(summary["synthetic"]["rgb"]) == {"ddpm", FOLDER}

    cfg = load_config(None, [*MICRO, *rgb_generators(scenes_folder)])
    files = sorted(scenes_folder.glob("*.png"))
    stems, expected = expected_folder_images(files, cfg)
    assert len(stems) == 16 and stems != [f.stem for f in files[:16]]  # a drawn subset, not the first 16
    assert external.choose(files, 16, cfg.seed) == [files.index(scenes_folder / f"{s}.png") for s in stems]

    step = one(rgb_study, f"folder/rgb-{FOLDER}-*")
    facts = manifest(step)
    assert facts["files"] == stems and facts["modality"] == "rgb" and facts["generator"] == FOLDER
    assert facts["folder"] == str(scenes_folder.resolve()) and facts["resize"] == "crop"
    images = load_synthetic(step)
    assert images.shape == (16, 3, 32, 32)
    assert torch.equal(images, expected)
    # the policy matters here: squashing the 40 x 32 frames would give other images
    squashed = [fit_square(np.asarray(Image.open(scenes_folder / f"{s}.png").convert("RGB")), 32, "squash")
                for s in stems]
    assert not torch.equal(images, to_tensor(np.stack(squashed)))
    # the MAE of the folder's condition trained on real + those images
    mae = manifest(one(rgb_study, f"mae/rgb-real+gen-{FOLDER}-seed0-*"))
    assert mae["n_images"] == 48 + 16


def test_the_same_config_draws_the_same_subset(rgb_study, scenes_folder):
    cfg = load_config(None, [*MICRO, *rgb_generators(scenes_folder)])
    entry = cfg.study.generators.entry("rgb", FOLDER)
    first, second = external.read_folder(cfg, entry), external.read_folder(cfg, entry)
    assert first[0] == second[0] == manifest(one(rgb_study, f"folder/rgb-{FOLDER}-*"))["files"]
    assert torch.equal(first[1], second[1]) and torch.equal(first[1], load_synthetic(one(rgb_study, "folder/*")))
    keys = [{s.folder for s in make_plan(load_config(None, [*MICRO, *rgb_generators(scenes_folder)]))}
            for _ in range(2)]
    assert keys[0] == keys[1]
    assert one(rgb_study, "folder/*").relative_to(rgb_study).as_posix() in keys[0]  # the run's own step
    # another study seed draws another subset
    other = load_config(None, [*MICRO, *rgb_generators(scenes_folder), "seed=3"])
    assert external.read_folder(other, other.study.generators.entry("rgb", FOLDER))[0] != first[0]


def test_a_changed_file_rebuilds_the_folder_step_and_its_maes_not_the_ddpm(rgb_study, scenes_folder, tmp_path):
    settings = [*MICRO, *rgb_generators(scenes_folder)]

    def plan_folders() -> set[str]:
        return {s.folder for s in make_plan(load_config(None, settings))}

    files = sorted(scenes_folder.glob("*.png"))
    chosen = manifest(one(rgb_study, "folder/*"))["files"]
    target = scenes_folder / f"{chosen[3]}.png"
    unchosen = next(f for f in files if f.stem not in chosen)
    saved = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (target, unchosen)}
    base = plan_folders()
    try:
        # touching a file (even one the study does not use) is a new folder: a new key
        stat = unchosen.stat()
        os.utime(unchosen, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        touched = plan_folders()
        assert {f.rsplit("-", 1)[0] for f in touched - base} == {
            f"folder/rgb-{FOLDER}", f"mae/rgb-real+gen-{FOLDER}-seed0", f"eval/rgb-real+gen-{FOLDER}-seed0"}
        os.utime(unchosen, ns=(stat.st_atime_ns, saved[unchosen][1]))
        assert plan_folders() == base  # name, size and time: the same folder again

        # a chosen file's new content: rebuilt, with the new image, and nothing else but its MAE
        from genaug.data.scenes import render_frames

        new_rgb = render_frames(seed=11, indices=[0], width=40, height=32)[0][0]
        Image.fromarray(new_rgb).save(target)
        assert plan_folders() != base
        copy = tmp_path / "run"
        shutil.copytree(rgb_study, copy)
        before = completed_steps(copy)
        result = run("run", "--out", str(copy), *overrides(rgb_generators(scenes_folder)))
        assert result.exit_code == 0, result.output
        after = completed_steps(copy)
        assert {f.rsplit("-", 1)[0] for f in set(after) - set(before)} == {
            f"folder/rgb-{FOLDER}", f"mae/rgb-real+gen-{FOLDER}-seed0", f"eval/rgb-real+gen-{FOLDER}-seed0"}
        for folder in before:
            assert after[folder] == before[folder]  # the DDPM, the real MAE: untouched
        rebuilt = load_synthetic(next(copy / f for f in set(after) - set(before) if f.startswith("folder/")))
        old = load_synthetic(one(rgb_study, "folder/*"))
        position = chosen.index(target.stem)
        assert torch.equal(rebuilt[position], to_tensor(fit_square(new_rgb, 32, "crop")[None])[0])
        assert not torch.equal(rebuilt[position], old[position])
        others = [i for i in range(16) if i != position]
        assert torch.equal(rebuilt[others], old[others])
    finally:
        for path, (content, mtime) in saved.items():
            path.write_bytes(content)
            os.utime(path, ns=(mtime, mtime))
    assert plan_folders() == base


# ------------------------------------------------------------------------------------------- pipeline:


def test_genaugs_own_ddpm_as_a_pipeline_samples_the_same_images(rgb_study, tmp_path):
    ddpm_step = one(rgb_study, "ddpm/rgb-ddpm-*")
    pipeline = ddpm_step / "pipeline"
    copy = tmp_path / "run"
    shutil.copytree(rgb_study, copy)
    before = completed_steps(copy)
    entry = toml_list(f"pipeline:{pipeline}")
    result = run("run", "--out", str(copy), *overrides([*RGB, f"study.generators.rgb={entry}"]))
    assert result.exit_code == 0, result.output
    new = set(completed_steps(copy)) - set(before)
    assert {f.rsplit("-", 1)[0] for f in new} == {  # the split and the real MAE are the run's own
        "pipeline/rgb-pipeline", "mae/rgb-real+gen-pipeline-seed0", "eval/rgb-real+gen-pipeline-seed0"}
    step = one(copy, "pipeline/rgb-pipeline-*")
    facts = manifest(step)
    ddpm_facts = manifest(ddpm_step)
    assert facts["pipeline"] in (str(pipeline), str(pipeline.resolve()))
    sampling = ("dpmsolver++", 3)  # the study's ddpm.sampler and MICRO's ddpm.sample_steps
    assert (facts["sampler"], facts["sample_steps"]) == (ddpm_facts["sampler"], ddpm_facts["sample_steps"]) == sampling
    assert facts["sampled_at"] == 32 and facts["sampled_channels"] == 3 and "resized_to" not in facts
    images, own = load_synthetic(step), load_synthetic(ddpm_step)
    assert images.shape == (16, 3, 32, 32) and images.float().std() > 0
    assert torch.equal(images, own)  # same sampler, steps, seed and count: genaug's own samples
    summary = json.loads((copy / "summary.json").read_text())
    assert "real+gen:pipeline" in summary["modalities"]["rgb"]["conditions"]


# ---------------------------------------------------------------------------------------- thermal ddpm


def test_thermal_ddpm_trains_and_samples_thermal(thermal_study):
    from diffusers import UNet2DModel

    summary = json.loads((thermal_study / "summary.json").read_text())
    assert set(summary["modalities"]) == {"thermal"}
    assert set(summary["modalities"]["thermal"]["conditions"]) == {"real", "real+gen:ddpm"}
    assert set(summary["synthetic"]["thermal"]) == {"ddpm"}
    step = one(thermal_study, "ddpm/thermal-ddpm-*")
    assert manifest(step)["modality"] == "thermal"
    assert UNet2DModel.from_pretrained(step / "pipeline" / "unet").config.in_channels == 1
    images = load_synthetic(step)
    assert images.shape == (16, 1, 32, 32)
    mae = manifest(one(thermal_study, "mae/thermal-real+gen-ddpm-seed0-*"))
    assert mae["n_images"] == 48 + 16


def test_the_thermal_ddpm_learns_the_pools_thermal_frames(thermal_study, tmp_path, monkeypatch):
    """What run_ddpm hands the DDPM's training: exactly the pool's thermal frames (not its RGB ones)."""
    from genaug.engine import Trainer
    from genaug.generators import ddpm
    from genaug.study import stages
    from genaug.study.outputs import load_split

    class Seen(Exception):
        pass

    def capture(cfg, images, seed, trainer):
        raise Seen(images)

    monkeypatch.setattr(ddpm, "train", capture)
    cfg = load_config(thermal_study / "config.toml")
    split_dir = one(thermal_study, "split/split-*")
    out = tmp_path / "ddpm"
    out.mkdir()
    ctx = stages.Context(cfg=cfg, out=out, inputs={"split": split_dir},
                         params={"modality": "thermal", "generator": "ddpm", "steps": 2}, manifest={},
                         trainer=lambda steps, log: Trainer(cfg.runtime, steps, out / log, "ddpm"),
                         advance=lambda done: None, note=lambda text: None)
    with pytest.raises(Seen) as seen:
        stages.run_ddpm(ctx)
    pool = load_split(split_dir)["pool"]
    assert torch.equal(seen.value.args[0], pool.thermal) and not torch.equal(seen.value.args[0], pool.rgb[:, :1])


def test_thermal_ddpm_with_three_thermal_channels_samples_three(tmp_path):
    from diffusers import UNet2DModel

    out = tmp_path / "run"
    result = run("run", "--out", str(out), *overrides([*THERMAL_DDPM, "data.thermal_channels=3"]))
    assert result.exit_code == 0, result.output
    step = one(out, "ddpm/thermal-ddpm-*")
    assert manifest(step)["modality"] == "thermal"
    # the real thermal frames repeat one channel: the DDPM learns that one, its samples repeat it too
    assert UNet2DModel.from_pretrained(step / "pipeline" / "unet").config.in_channels == 1
    samples = load_synthetic(step)
    assert samples.shape == (16, 3, 32, 32)
    assert torch.equal(samples[:, :1].expand(-1, 3, -1, -1), samples) and samples.float().std() > 0
    assert manifest(one(out, "mae/thermal-real+gen-ddpm-seed0-*"))["n_images"] == 48 + 16


# ------------------------------------------------------------------------------------------ bad inputs


def _empty(root):
    folder = root / "empty"
    folder.mkdir()
    return [f"folder:{folder}"], ["study.generators.thermal: 'folder:", "no images", str(folder)]


def _not_images(root):
    folder = root / "notes"
    folder.mkdir()
    for i in range(6):
        (folder / f"image_{i}.txt").write_text("not an image\n")
    return [f"folder:{folder}"], ["no images", str(folder)]


def _too_few(root):
    folder = root / "three"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(folder / f"f{i}.png")
    return [f"folder:{folder}"], ["3 images in", "study.n_synthetic = 4", "at most 3"]


def _not_a_pipeline(root):
    folder = root / "weights"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text("{}")
    return [f"pipeline:{folder}"], ["study.generators.thermal: 'pipeline:", "no model_index.json", str(folder)]


def _conditional_pipeline(root):
    folder = root / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return [f"pipeline:{folder}"], ["StableDiffusionPipeline", "unconditional pipelines only"]


def _hub_id_not_here(root):
    return ["pipeline:genaug-tests/no-such-pipeline"], ["'pipeline:genaug-tests/no-such-pipeline'",
                                                        "not on this machine"]


def _unknown_generator(root):
    return ["stylegan3"], ["study.generators.thermal", "unknown generator 'stylegan3'"]


def _folder_without_argument(root):
    return ["folder"], ["study.generators.thermal", "'folder' needs its path"]


PLAN_CASES = {
    "empty folder": _empty,
    "folder of non-images": _not_images,
    "too few images": _too_few,
    "pipeline path that is no pipeline": _not_a_pipeline,
    "conditional pipeline": _conditional_pipeline,
    "hub id not on this machine": _hub_id_not_here,
    "unknown generator": _unknown_generator,
    "folder without its path": _folder_without_argument,
}
# a thermal real+gen condition of four images beside the nano study's real one
WITH_GENERATOR = ['study.conditions=["real", "real+gen"]', "study.n_synthetic=4"]


@pytest.mark.parametrize("case", PLAN_CASES.values(), ids=PLAN_CASES.keys())
def test_bad_generator_entry_fails_before_any_stage(produced, tmp_path, case):
    entries, fragments = case(tmp_path)
    result = invoke("run", "--out", produced.dir,
                    *sets(*NANO, *WITH_GENERATOR, f"study.generators.thermal={toml_list(*entries)}"))
    assert_user_error(result, *fragments)
    produced.intact()
    new = set(snapshot(produced.dir)) - set(produced.before) - PROGRESS_RECORDS
    assert not new, new  # nothing ran: no stage folder, no temporary one


def test_translator_under_rgb(produced):
    result = invoke("run", "--out", produced.dir, *sets(*NANO, 'study.generators.rgb=["cyclegan"]'))
    assert_user_error(result, "study.generators.rgb", "cyclegan makes thermal images, not rgb",
                      "study.generators.thermal")
    produced.intact()


def test_corrupt_image_in_the_folder_fails_at_its_stage_naming_the_file(produced, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(4):  # exactly study.n_synthetic: every file is read
        Image.fromarray(np.full((20, 20), 50 * i, np.uint8)).save(folder / f"f{i}.png")
    (folder / "f2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    result = invoke("run", "--out", produced.dir,
                    *sets(*NANO, *WITH_GENERATOR, f"study.generators.thermal={toml_list(f'folder:{folder}')}"))
    assert_user_error(result, str(folder / "f2.png"), "unreadable image")
    produced.intact()
    assert not list(produced.dir.glob("folder/*/manifest.json"))  # no folder step was completed


# ----------------------------------------------------------------------------------------- 16-bit thermal


def test_16bit_thermal_folder_follows_the_policy(tmp_path):
    from genaug.data.frames import with_channels

    folder = tmp_path / "lwir16"
    folder.mkdir()
    rng = np.random.default_rng(0)
    values = []
    for i in range(3):
        ramp = np.linspace(20000 + 1000 * i, 26000 + 2000 * i, 48)[None, :] + rng.integers(0, 500, (40, 48))
        values.append(ramp.astype(np.uint16))
        Image.fromarray(values[-1]).save(folder / f"t{i}.png")
        assert Image.open(folder / f"t{i}.png").mode.startswith("I")  # 16-bit on disk

    def read(policy, channels=1):
        cfg = load_config(None, [f"study.generators.thermal={toml_list(f'folder:{folder}')}", "study.n_synthetic=3",
                                 f'data.folder.thermal_16bit="{policy}"', f"data.thermal_channels={channels}"])
        return external.read_folder(cfg, cfg.study.generators.entries("thermal")[0])

    def expected(policy):
        out = []
        for v in values:
            v = v.astype(np.float64)
            unit = v / 65535 if policy == "full" else (v - v.min()) / (v.max() - v.min())
            scaled = np.round(unit * 255).astype(np.uint8)
            assert np.array_equal(scaled, read_thermal(folder / f"t{len(out)}.png", policy)[0])
            out.append(fit_square(scaled, 32, "crop"))
        return to_tensor(np.stack(out))

    (ids, full), (_, minmax) = read("full"), read("minmax")
    assert ids == ["t0", "t1", "t2"] and full.shape == minmax.shape == (3, 1, 32, 32)
    assert torch.equal(full, expected("full")) and torch.equal(minmax, expected("minmax"))
    assert not torch.equal(full, minmax)
    assert minmax.max() > 200 and full.max() <= 120  # minmax stretches; full keeps the absolute level
    assert torch.equal(read("full", channels=3)[1], with_channels(full, 3))
