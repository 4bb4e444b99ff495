"""A catalogue of bad inputs, each driven through the real CLI (`genaug run`, `validate`, `report`).

Every mistake a user can make ends the command with exit status 2 and one line on stderr,
`error: <what is wrong, where, what to do>`, naming the key, file or value at fault; never a
traceback. And nothing already produced is lost: each case runs against a copy of a completed micro
run (plus a sentinel file of the user's), whose files must be byte-for-byte and mtime-for-mtime
what they were before, and data cases also check that the user's data files were not touched.

The study is nano-sized (thermal only, the real condition, one seed, four MAE steps): the completed
run is built once per module in a few seconds, and every case fails before or at its first stage (but
the rolled-back non-finite loss, which completes its MAE).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import traceback
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genaug.cli import app

runner = CliRunner()

# Smaller than the test suite's MICRO study: split, one MAE, two evaluations.
NANO = [
    "data.n_pool=4", "data.n_train=8", "data.n_test=4", "data.scenes.n_frames=20", "data.image_size=16",
    'study.modalities=["thermal"]', 'study.conditions=["real"]', "study.seeds=[0]",
    "mae.preset=micro", "mae.steps=4", "mae.warmup_steps=0", "mae.batch_size=4",
    "runtime.log_every=2", "runtime.checkpoint_every=2", "runtime.device=cpu",
]
N_FRAMES = 16  # pool + train + test: a folder or KAIST split of exactly this many frames is used whole


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def quoted(path: Path) -> str:
    return json.dumps(str(path))  # a TOML string: a --set value


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def explain(result) -> str:
    if result.exc_info is not None and not isinstance(result.exc_info[1], SystemExit):
        return result.output + "".join(traceback.format_exception(*result.exc_info))
    return result.output


def assert_user_error(result, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr, `error: ...` holding every fragment, no traceback. -> the line."""
    assert result.exit_code == 2, explain(result)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, mtime_ns) of every file under root, hidden ones included."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[path.relative_to(root).as_posix()] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                                        path.stat().st_mtime_ns)
    return files


# The record of the run in progress (what `genaug status` reads): every run rewrites it by design.
PROGRESS_RECORDS = {".current-plan.json"}


def assert_intact(root: Path, before: dict) -> None:
    after = snapshot(root)
    changed = [name for name, state in before.items() if after.get(name) != state and name not in PROGRESS_RECORDS]
    assert not changed, f"{root}: changed or lost {changed[:5]}"


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("completed") / "run"
    result = invoke("run", "--out", out, *sets(*NANO))
    assert result.exit_code == 0, explain(result)
    return out


class Produced:
    """A private copy of the completed run plus a sentinel file; `intact()` checks nothing was lost."""

    def __init__(self, completed: Path, where: Path):
        self.dir = where / "run"
        shutil.copytree(completed, self.dir)  # copy2: mtimes kept
        (self.dir / "my-notes.txt").write_text("the user's own file in the run directory\n")
        self.freeze()

    def freeze(self) -> None:
        self.before = snapshot(self.dir)

    def intact(self) -> None:
        assert_intact(self.dir, self.before)


@pytest.fixture
def produced(completed_run, tmp_path) -> Produced:
    return Produced(completed_run, tmp_path)


@pytest.fixture(scope="module")
def pairs_template(tmp_path_factory) -> Path:
    from genaug.data.scenes import write_paired_folder

    root = tmp_path_factory.mktemp("pairs")
    write_paired_folder(root, N_FRAMES, width=40, height=32)
    return root


@pytest.fixture
def pairs(pairs_template, tmp_path) -> Path:
    """A private paired folder (rgb/, thermal/; scene_000000.png ...) of exactly N_FRAMES frames."""
    root = tmp_path / "pairs"
    shutil.copytree(pairs_template, root)
    return root


def folder_settings(rgb: Path | str = "", thermal: Path | str = "") -> list[str]:
    out = ["data.source=folder"]
    out += [f"data.folder.rgb={quoted(rgb)}"] if rgb else []
    out += [f"data.folder.thermal={quoted(thermal)}"] if thermal else []
    return out


@pytest.fixture(scope="module")
def kaist_template(tmp_path_factory) -> Path:
    """A KAIST-layout tree: set00/V000 (16 day frames, train-all-02), set06/V000 (6 frames, test-all-20)."""
    from genaug.data import scenes

    root = tmp_path_factory.mktemp("kaist")
    rgb, thermal, _ = scenes.render_frames(3, range(22), 40, 32)
    lines: dict[str, list[str]] = {"train-all-02": [], "test-all-20": []}
    k = 0
    for set_name, n, split in (("set00", 16, "train-all-02"), ("set06", 6, "test-all-20")):
        video = root / "images" / set_name / "V000"
        (video / "visible").mkdir(parents=True)
        (video / "lwir").mkdir()
        for i in range(n):
            Image.fromarray(rgb[k]).save(video / "visible" / f"I{i:05d}.jpg")
            Image.fromarray(np.repeat(thermal[k][..., None], 3, axis=2)).save(video / "lwir" / f"I{i:05d}.jpg")
            lines[split].append(f"{set_name}/V000/I{i:05d}")
            k += 1
    (root / "imageSets").mkdir()
    for split, ids in lines.items():
        (root / "imageSets" / f"{split}.txt").write_bytes("".join(f"{x}\r\n" for x in ids).encode())
    return root


@pytest.fixture
def kaist(kaist_template, tmp_path) -> Path:
    root = tmp_path / "kaist"
    shutil.copytree(kaist_template, root)
    return root


def kaist_settings(root: Path, train: str = "train-all-02", test: str = "test-all-20") -> list[str]:
    # no probe: these trees have no annotations/ (tests/study/test_real_sources.py reads those)
    return ["data.source=kaist", f"data.kaist.root={quoted(root)}", f"data.kaist.train_split={train}",
            f"data.kaist.test_split={test}", "probe.tasks=[]"]


# ---------------------------------------------------------------------------------- config and --set

# (case, extra --set items, fragments the one error line must hold)
SET_CASES = [
    ("unknown key", ["mae.banana=1"], ["unknown key 'mae.banana'"]),
    ("misspelt key", ["mae.stpes=10"], ["mae.stpes", "did you mean 'mae.steps'"]),
    ("misspelt table", ["dpm.steps=1"], ["'dpm'", "did you mean 'ddpm'"]),
    ("wrong type", ["mae.steps=many"], ["key 'mae.steps' = 'many'"]),
    ("bool for int", ["mae.steps=true"], ["key 'mae.steps' = True"]),
    ("out of range", ["mae.mask_ratio=1.5"], ["key 'mae.mask_ratio' = 1.5", "less than 1"]),
    ("negative count", ["data.n_train=-3"], ["key 'data.n_train' = -3"]),
    ("unknown generator", ['study.generators.thermal=["stylegan"]'],
     ["study.generators.thermal", "'stylegan'"]),
    ("unknown condition", ['study.conditions=["real", "real+magic"]'], ["study.conditions", "'real+magic'"]),
    ("unknown modality", ['study.modalities=["depth"]'], ["study.modalities", "'depth'"]),
    ("scenes too few frames", ["data.scenes.n_frames=10"], ["data.scenes.n_frames = 10", "data.n_train"]),
    ("set empty value", ["mae.steps="], ["--set", "mae.steps"]),
    ("set no equals sign", ["nokey"], ["--set 'nokey'", "key=value"]),
    ("set unclosed list", ["mae.steps=[1,"], ["--set 'mae.steps=[1,'", "not a valid TOML value"]),
    ("set unclosed string", ['data.folder.rgb="/data/rgb'], ["--set", "data.folder.rgb", "not a valid TOML value"]),
    ("set empty key part", ["mae..steps=3"], ["--set 'mae..steps=3'"]),
    ("set into a value", ["seed.x=1"], ["'seed' is a value"]),
    ("pretrained missing offline", ["mae.init=facebook/does-not-exist"],
     ["mae.init = 'facebook/does-not-exist' is not on this machine"]),
]


@pytest.mark.parametrize("extra, fragments", [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES])
def test_bad_set_or_config_value(produced, monkeypatch, extra, fragments):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_user_error(invoke("run", "--out", produced.dir, *sets(*NANO, *extra)), *fragments)
    produced.intact()


# (case, config file text or None for no file, fragments)
FILE_CASES = [
    ("toml syntax error", "[mae\nsteps = 3\n", ["study.toml: not valid TOML"]),
    ("unknown key in file", "[mae]\nbanana = 1\n", ["study.toml", "unknown key 'mae.banana'"]),
    ("wrong type in file", "[mae]\nlr = 'fast'\n", ["study.toml", "key 'mae.lr' = 'fast'"]),
    ("not utf-8", None, ["study.toml: cannot read it as a UTF-8 text file"]),
    ("no such file", "", ["nope.toml: no such config file"]),
]


@pytest.mark.parametrize("text, fragments", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_config_file(produced, tmp_path, text, fragments):
    path = tmp_path / "study.toml"
    if text is None:
        path.write_bytes(b"[mae]\nsteps = 3 # \xff\xfe\n")
    elif text:
        path.write_text(text)
    else:
        path = tmp_path / "nope.toml"
    assert_user_error(invoke("run", path, "--out", produced.dir, *sets(*NANO)), *fragments)
    produced.intact()


def test_three_channel_pretrained_mae_with_one_channel_thermal(produced, tmp_path):
    from genaug import mae
    from genaug.config import MAEConfig

    folder = tmp_path / "tiny-mae"
    mae.build(MAEConfig(preset="micro", patch_size=4), 16, 3).save_pretrained(folder)
    result = invoke("run", "--out", produced.dir,
                    *sets(*NANO, f"mae.init={quoted(folder)}", "data.thermal_channels=1"))
    assert_user_error(result, f"mae.init = '{folder}' takes 3-channel images but these images have 1",
                      "data.thermal_channels = 3")
    produced.intact()


def test_out_is_an_existing_file(tmp_path):
    out = tmp_path / "results.txt"
    out.write_text("the user's file, not a run directory\n")
    before = snapshot(tmp_path)
    assert_user_error(invoke("run", "--out", out, *sets(*NANO)), f"{out}: the output path is a file")
    assert_intact(tmp_path, before)


# ------------------------------------------------------------------------------------------- data

def _empty_folder(root):
    (root / "empty").mkdir()
    return folder_settings(rgb=root / "empty"), [f"data.folder.rgb = '{root / 'empty'}': no images"]


def _missing_folder(root):
    return (folder_settings(root / "rgb", root / "no-such-folder"),
            [f"data.folder.thermal = '{root / 'no-such-folder'}': no such folder"])


def _folder_is_a_file(root):
    return folder_settings(root / "tags.csv"), [f"data.folder.rgb = '{root / 'tags.csv'}': is a file"]


def _truncated_jpeg(root):
    png = root / "rgb" / "scene_000003.png"
    jpeg = png.with_suffix(".jpg")
    Image.open(png).convert("RGB").save(jpeg, quality=95)
    png.unlink()
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    return folder_settings(root / "rgb", root / "thermal"), [f"{jpeg}: unreadable image"]


def _zero_byte(root):
    path = root / "thermal" / "scene_000004.png"
    path.write_bytes(b"")
    return folder_settings(root / "rgb", root / "thermal"), [f"{path}: unreadable image"]


def _not_an_image(root):
    path = root / "rgb" / "scene_000006.png"
    path.write_text("this is a text file with an image's name\n")
    return folder_settings(root / "rgb", root / "thermal"), [f"{path}: unreadable image"]


def _too_small(root):
    path = root / "thermal" / "scene_000005.png"
    Image.new("L", (12, 10), 90).save(path)
    return folder_settings(root / "rgb", root / "thermal"), [f"{path}", "12x10", "data.image_size = 16"]


def _too_small_for_size(root):
    return ([*folder_settings(root / "rgb", root / "thermal"), "data.image_size=64"],
            ["40x32", "data.image_size = 64"])


def _missing_partner(root):
    (root / "thermal" / "scene_000005.png").unlink()
    return (folder_settings(root / "rgb", root / "thermal"),
            [f"{root / 'rgb' / 'scene_000005.png'}", 'data.missing = "skip"'])


def _duplicate_ids(root):
    shutil.copy(root / "rgb" / "scene_000002.png", root / "rgb" / "scene_000002.bmp")
    return folder_settings(root / "rgb", root / "thermal"), ["share the stem 'scene_000002'", "data.folder.rgb"]


def _no_common_stem(root):
    for path in (root / "thermal").iterdir():
        path.rename(path.with_name("ir_" + path.name))
    return ([*folder_settings(root / "rgb", root / "thermal"), 'data.missing="skip"'],
            ["no file stem is in both"])


def _more_frames_than_available(root):
    return ([*folder_settings(root / "rgb", root / "thermal"), "data.n_train=9"],
            ["data.n_test + data.n_train + data.n_pool = 17", f"holds {N_FRAMES} frames"])


def _rgb_only_with_thermal_modality(root):
    return folder_settings(root / "rgb"), ["study.modalities lists thermal"]


def _unreadable_file(root):
    path = root / "rgb" / "scene_000001.png"
    return (folder_settings(root / "rgb", root / "thermal"), [f"{path}: unreadable image", "Permission denied"],
            path)


def _unreadable_folder(root):
    folder = root / "thermal"
    return (folder_settings(root / "rgb", folder),
            [f"data.folder.thermal = '{folder}': cannot list the folder (Permission denied)"], folder)


FOLDER_CASES = {
    "empty data folder": _empty_folder,
    "missing data folder": _missing_folder,
    "data folder is a file": _folder_is_a_file,
    "truncated jpeg": _truncated_jpeg,
    "zero-byte image": _zero_byte,
    "text file named .png": _not_an_image,
    "one image smaller than image_size": _too_small,
    "every image smaller than image_size": _too_small_for_size,
    "missing partner": _missing_partner,
    "duplicate ids": _duplicate_ids,
    "no common stem": _no_common_stem,
    "n_train + n_test + n_pool > frames": _more_frames_than_available,
    "modality the source lacks": _rgb_only_with_thermal_modality,
    "unreadable file": _unreadable_file,
    "unreadable folder": _unreadable_folder,
}


def deny_reading(monkeypatch, denied: Path) -> None:
    """What `chmod 000 denied` does for a user without root's override, made so for root too (CI runs as
    root, where chmod changes nothing): opening `denied` or anything in it, and listing it, raise the
    kernel's PermissionError (EACCES); every other path reads as before. Covers what the readers call:
    PIL's `builtins.open`, pathlib's `io.open`, `os.scandir` and `os.listdir`."""
    import builtins
    import errno
    import io

    denied_path = os.path.abspath(denied)

    def refusing(real, name):
        def wrapper(*args, **kwargs):
            target = args[0] if args else kwargs.get("file", kwargs.get("path", "."))
            if isinstance(target, (str, os.PathLike)):
                path = os.path.abspath(target)
                if path == denied_path or path.startswith(denied_path + os.sep):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(target))
            return real(*args, **kwargs)

        wrapper.__name__ = name
        return wrapper

    for module, name in ((builtins, "open"), (io, "open"), (os, "scandir"), (os, "listdir")):
        monkeypatch.setattr(module, name, refusing(getattr(module, name), name))


@pytest.mark.parametrize("damage", FOLDER_CASES.values(), ids=FOLDER_CASES.keys())
def test_bad_folder_data(produced, pairs, monkeypatch, damage):
    """Each damaged folder ends the run with the one line naming the file or folder at fault. The
    unreadable cases deny reading one path the way the kernel does for a non-root user (see
    `deny_reading`), so they run as root as well."""
    settings, fragments, *unreadable = damage(pairs)
    data = snapshot(pairs)
    with monkeypatch.context() as denial:
        for path in unreadable:
            deny_reading(denial, path)
        result = invoke("run", "--out", produced.dir, *sets(*NANO, *settings))
    assert_user_error(result, *fragments)
    produced.intact()
    assert_intact(pairs, data)  # the user's data is never touched


def _missing_root(root):
    return (kaist_settings(root.parent / "no-kaist-here"),
            [f"data.kaist.root = '{root.parent / 'no-kaist-here'}'", "is not a folder"])


def _missing_images_folder(root):
    shutil.rmtree(root / "images")
    return kaist_settings(root), [f"{root / 'images'} does not exist"]


def _split_line_matching_no_frame(root):
    with open(root / "imageSets" / "train-all-02.txt", "ab") as f:
        f.write(b"set00/V000/I99999\r\n")
    return kaist_settings(root), ["train-all-02.txt", "'set00/V000/I99999'", "match no frame"]


def _split_file_missing(root):
    return kaist_settings(root, train="train-all-99"), ["data.kaist.train_split = 'train-all-99'", "available:"]


def _leakage(root):
    return (kaist_settings(root, test="train-all-02"),
            ["data.kaist.test_split = 'train-all-02'", "leakage"])


def _kaist_missing_partner(root):
    (root / "images" / "set00" / "V000" / "lwir" / "I00007.jpg").unlink()
    return kaist_settings(root), [f"{root / 'images' / 'set00' / 'V000' / 'lwir' / 'I00007.jpg'} is missing"]


def _kaist_truncated(root):
    path = root / "images" / "set00" / "V000" / "lwir" / "I00002.jpg"
    path.write_bytes(path.read_bytes()[:200])
    return [*kaist_settings(root), "data.n_pool=8"], [f"{path}: unreadable image"]  # every training frame used


def _kaist_too_few(root):
    return [*kaist_settings(root), "data.n_test=7"], ["data.n_test = 7 of 6 test frames"]


KAIST_CASES = {
    "missing data root": _missing_root,
    "root without images/": _missing_images_folder,
    "split line matching no frame": _split_line_matching_no_frame,
    "split file missing": _split_file_missing,
    "test split is the train split (leakage)": _leakage,
    "kaist missing partner": _kaist_missing_partner,
    "kaist truncated jpeg": _kaist_truncated,
    "kaist n_test > test frames": _kaist_too_few,
}


@pytest.mark.parametrize("damage", KAIST_CASES.values(), ids=KAIST_CASES.keys())
def test_bad_kaist_data(produced, kaist, damage):
    settings, fragments = damage(kaist)
    data = snapshot(kaist)
    assert_user_error(invoke("run", "--out", produced.dir, *sets(*NANO, *settings)), *fragments)
    produced.intact()
    assert_intact(kaist, data)


# ------------------------------------------------------------------------------- the run directory


def _mae_step(settings: list[str]):
    from genaug.config import load_config
    from genaug.study.plan import make_plan

    return next(step for step in make_plan(load_config(None, settings)) if step.stage == "mae")


def _checkpoint(produced: Produced, settings: list[str]) -> Path:
    from genaug.study.store import Store

    step = _mae_step(settings)
    folder = Store(produced.dir).checkpoints("mae", step.name, step.key) / "checkpoint-2"
    folder.mkdir(parents=True)
    return folder


CHECKPOINT_CASES = {
    "garbage": ({"tensors.safetensors": b"\x00not safetensors", "state.json": b"{"}, "unreadable checkpoint"),
    "truncated tensors": ({"tensors.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", "state.json": b"{}"},
                          "unreadable checkpoint"),
    "state of other code": ({"state.json": b'{"state": {}, "loop": {}}'}, "checkpoint lacks"),
}


@pytest.mark.parametrize("files, fragment", CHECKPOINT_CASES.values(), ids=CHECKPOINT_CASES.keys())
def test_corrupted_checkpoint(produced, files, fragment):
    from safetensors.torch import save_file

    settings = [*NANO, "mae.steps=6"]  # a new MAE, to be resumed from its (corrupted) checkpoint
    folder = _checkpoint(produced, settings)
    if "tensors.safetensors" not in files:
        save_file({}, folder / "tensors.safetensors")
    for name, content in files.items():
        (folder / name).write_bytes(content)
    produced.freeze()  # the checkpoint is the user's to keep or delete
    assert_user_error(invoke("run", "--out", produced.dir, *sets(*settings)), str(folder), fragment)
    produced.intact()


def test_checkpoint_json_without_state(produced):
    from safetensors.torch import save_file

    settings = [*NANO, "mae.steps=6"]
    folder = _checkpoint(produced, settings)
    save_file({}, folder / "tensors.safetensors")
    (folder / "state.json").write_text("[]")
    produced.freeze()
    assert_user_error(invoke("run", "--out", produced.dir, *sets(*settings)), str(folder), "not a genaug checkpoint")
    produced.intact()


def _set_format_version(run_dir: Path, version: int | None) -> None:
    """Make every stage manifest look written by another genaug (None: one from before format_version)."""
    for manifest in run_dir.glob("*/*/manifest.json"):
        data = json.loads(manifest.read_text())
        data.pop("format_version")
        if version is not None:
            data["format_version"] = version
        manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize("version", [1, 99, None], ids=["older", "newer", "none"])
def test_report_of_a_run_directory_from_another_version(produced, version):
    _set_format_version(produced.dir, version)
    produced.freeze()
    assert_user_error(invoke("report", produced.dir), f"format_version {version}", "genaug run")
    produced.intact()


def test_report_with_a_corrupted_plan(produced):
    (produced.dir / "plan.json").write_text('{"steps": [')
    produced.freeze()
    assert_user_error(invoke("report", produced.dir), f"{produced.dir / 'plan.json'}: unreadable", "genaug run")
    produced.intact()


def test_report_with_a_corrupted_manifest(produced):
    manifest = next(produced.dir.glob("mae/*/manifest.json"))
    manifest.write_text('{"stage": "mae", ')
    produced.freeze()
    assert_user_error(invoke("report", produced.dir), f"{manifest}: unreadable", f"delete {manifest.parent}")
    produced.intact()


# ----------------------------------------------------------------------------------------- the cache


def test_corrupted_cache_entries_are_decoded_again(tmp_path, monkeypatch):
    """Not an error: a damaged cache entry (truncated, garbage, ids of another set) is re-decoded."""
    from safetensors.torch import load_file

    monkeypatch.setenv("GENAUG_CACHE", str(tmp_path / "cache"))
    args = ["validate", *sets(*NANO)]
    assert invoke(*args).exit_code == 0
    entries = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert len(entries) == 3  # test, train, pool
    entries[0].write_bytes(entries[0].read_bytes()[:40])
    entries[1].with_suffix(".json").write_text("{not json")
    meta = json.loads(entries[2].with_suffix(".json").read_text())
    entries[2].with_suffix(".json").write_text(json.dumps({**meta, "ids": meta["ids"][:1]}))
    result = invoke(*args)
    assert result.exit_code == 0, explain(result)
    for entry in entries:  # rewritten whole
        ids = json.loads(entry.with_suffix(".json").read_text())["ids"]
        assert len(ids) == len(load_file(entry)["thermal"]) > 1


def test_cache_folder_is_a_file(produced, tmp_path, monkeypatch):
    cache = tmp_path / "cache-is-a-file"
    cache.write_text("not a folder\n")
    monkeypatch.setenv("GENAUG_CACHE", str(cache))
    result = invoke("run", "--out", produced.dir, *sets(*NANO, "data.n_test=5"))  # a new split: decoded, cached
    assert_user_error(result, f"GENAUG_CACHE = '{cache}'", "cannot write")
    produced.intact()
    assert cache.read_text() == "not a folder\n"


# ----------------------------------------------------------------- being implemented by the lead


Usage = namedtuple("Usage", "total used free")


def test_disk_short(produced, monkeypatch):
    """A stage whose disk need exceeds the free space is refused before it starts, with both numbers:
    the need of that stage (resources' estimate for the new MAE, the first stage left to build) and the
    free space, each in the unit printed. The free space is faked 1 MB short of the need: the two numbers
    differ, and a shortfall that small is refused too."""
    from genaug.config import load_config
    from genaug.study.resources import MB, disk_need
    from genaug.study.build import images_written

    settings = [*NANO, "mae.steps=6"]
    step = _mae_step(settings)
    cfg = load_config(None, settings)
    need = disk_need(cfg, step.stage, step.params, images_written(cfg, step))
    free = need - MB
    # shutil itself, so the check is faked wherever it lives (genaug.study.runner or a helper module it uses)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))
    line = assert_user_error(invoke("run", "--out", produced.dir, *sets(*settings)), "disk", "mae thermal-real-seed0")
    assert re.findall(r"(\d+) MB", line) == [f"{need / MB:.0f}", f"{free / MB:.0f}"], line  # need, then free
    produced.intact()


def test_non_finite_loss(produced):
    result = invoke("run", "--out", produced.dir, *sets(*NANO, "mae.lr=1e30"))
    assert_user_error(result, "thermal-real-seed0", "non-finite")
    produced.intact()


def test_a_rolled_back_non_finite_loss_is_noted_in_the_stage_manifest(produced, monkeypatch):
    """runtime.on_nonfinite = "rollback": a non-finite loss at the MAE's 3rd step (made so in the losses
    the trainer reads) sends the stage back to its last checkpoint, checkpoint-2, with every learning
    rate halved, and the run completes. The stage's manifest.json records the step, the checkpoint and
    the halving; and the redone steps did run at half their rates (through accelerate's wrapped
    optimiser and schedule: the schedule's base rates are halved too, so the next step keeps it)."""
    from genaug import engine

    fit = engine.Trainer.fit
    lrs = []  # the MAE's learning rate at each step it ran, redone steps included

    def fit_with_a_nan_at_step_3(self, step, state=None):
        if self.stage != "mae":
            return fit(self, step, state)
        poison = {2}  # 0-based

        def poisoned(i):
            lrs.append(state["optimizer"].param_groups[0]["lr"])
            losses = step(i)
            if i in poison:  # once: the step redone after the rollback is finite
                poison.discard(i)
                losses = {name: loss * float("nan") for name, loss in losses.items()}
            return losses

        return fit(self, poisoned, state)

    monkeypatch.setattr(engine.Trainer, "fit", fit_with_a_nan_at_step_3)
    settings = [*NANO, "mae.steps=6", "runtime.on_nonfinite=rollback"]
    result = invoke("run", "--out", produced.dir, *sets(*settings))
    assert result.exit_code == 0, explain(result)
    stage = produced.dir / _mae_step(settings).folder
    assert json.loads((stage / "manifest.json").read_text())["notes"] == [
        "mae thermal-real-seed0: loss 'loss' non-finite at step 3; rolled back to checkpoint-2 with every learning "
        "rate halved"]
    # steps 1-4 (step 3's NaN seen at the log step, 4), then 3-6 again: 3 and 4 at half their first rates
    assert len(lrs) == 8 and lrs[4:6] == pytest.approx([lrs[2] / 2, lrs[3] / 2]) and lrs[3] > 0
    rows = [json.loads(line) for line in (stage / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2, 4, 6] and all(np.isfinite(row["loss"]) for row in rows)


def test_out_of_gpu_memory_names_the_batch_size(produced, monkeypatch):
    """CUDA's out-of-memory error (raised here from the MAE's forward: no GPU needed) is answered with the
    batch-size key and value that failed, and the stages built before are kept."""
    import torch

    from genaug import mae

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(mae, "train", no_memory)
    result = invoke("run", "--out", produced.dir, *sets(*NANO, "mae.steps=6", "mae.batch_size=6"))
    assert_user_error(result, "mae thermal-real-seed0", "CUDA ran out of memory at mae.batch_size = 6",
                      "--set mae.batch_size=3")
    produced.intact()
