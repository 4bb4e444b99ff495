"""Tests for the KAIST source: listing, split files, selection, pairing, loading and inspect."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genaug.config import DataConfig
from genaug.data import kaist as K
from genaug.data import scenes
from genaug.errors import UserError

from .known_answers import assert_fitted, banded

# (set, video, frames): set00 and set06 are day sets, set03 a night set; set06 is the test split
VIDEOS = [("set00", "V000", 4), ("set00", "V001", 3), ("set03", "V000", 3), ("set06", "V000", 2)]
TRAIN = [f"{s}/{v}/I{i:05d}" for s, v, n in VIDEOS[:3] for i in range(n)]
TEST = [f"{s}/{v}/I{i:05d}" for s, v, n in VIDEOS[3:] for i in range(n)]
W, H = 64, 48


def build_tree(root: Path) -> Path:
    """A tiny KAIST tree: visible RGB JPEGs, lwir 3-channel JPEGs with equal channels, CRLF split files."""
    total = sum(n for _, _, n in VIDEOS)
    rgb, thermal, _ = scenes.render_frames(0, range(total), W, H)
    k = 0
    for s, v, n in VIDEOS:
        for folder in ("visible", "lwir"):
            (root / "images" / s / v / folder).mkdir(parents=True)
        for i in range(n):
            name = f"I{i:05d}.jpg"
            Image.fromarray(rgb[k]).save(root / "images" / s / v / "visible" / name, quality=90)
            lwir = np.repeat(thermal[k][..., None], 3, axis=2)
            Image.fromarray(lwir).save(root / "images" / s / v / "lwir" / name, quality=90)
            k += 1
    (root / "images" / "set00" / "V000" / "visible" / "Thumbs.db").write_bytes(b"x")  # not an image
    sets = root / "imageSets"
    sets.mkdir()
    (sets / "train-all.txt").write_bytes("".join(f"{line}\r\n" for line in TRAIN).encode())
    (sets / "test-all.txt").write_bytes("".join(f"{line}\r\n" for line in TEST).encode())
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("kaist"))


@pytest.fixture
def own_tree(tmp_path) -> Path:
    """A tree a test may damage."""
    return build_tree(tmp_path / "kaist")


def data(root: Path, missing: str = "error", thermal_channels: int = 1, **kaist) -> DataConfig:
    return DataConfig(source="kaist", kaist={"root": str(root), **kaist}, image_size=16, missing=missing,
                      thermal_channels=thermal_channels)


def scan(root: Path, **kw):
    return K.KaistSource(data(root, **kw), seed=0).scan()


def ids(frames) -> list[str]:
    return [f.id for f in frames]


# ------------------------------------------------------------------------------------------ basics


def test_day_and_night_sets():
    assert K.DAY_SETS == {"set00", "set01", "set02", "set06", "set07", "set08"}
    assert [K.is_night(f"set{i:02d}") for i in range(12)] == [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3


def test_read_split_file_accepts_crlf_lf_blank_lines_and_spaces(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"set00/V000/I00000\r\n  set00/V000/I00001  \r\n\r\nset00/V000/I00002\nset00/V000/I00003")
    assert K.read_split_file(path) == [f"set00/V000/I{i:05d}" for i in range(4)]


def test_resolve_split_by_name_without_txt_and_by_path(tree):
    assert K.resolve_split(tree, "train-all.txt") == tree / "imageSets" / "train-all.txt"
    assert K.resolve_split(tree, "train-all") == tree / "imageSets" / "train-all.txt"
    assert K.resolve_split(tree, str(tree / "imageSets" / "test-all.txt")) == tree / "imageSets" / "test-all.txt"
    with pytest.raises(UserError, match=r"train-all-02\.txt.*not found.*test-all\.txt, train-all\.txt"):
        K.resolve_split(tree, "train-all-02")
    with pytest.raises(UserError, match="nowhere/x.txt"):
        K.resolve_split(tree, str(tree / "nowhere" / "x.txt"))


def test_scan_tree_pairs_by_name_sorted_with_groups_and_night(tree):
    refs, lonely = K.scan_tree(tree)
    assert ids(refs) == sorted(TRAIN + TEST) and lonely == []
    first = refs[0]
    assert first.id == "set00/V000/I00000" and first.group == "set00/V000" and first.night is False
    assert first.rgb == tree / "images/set00/V000/visible/I00000.jpg"
    assert first.thermal == tree / "images/set00/V000/lwir/I00000.jpg"
    assert {r.night for r in refs if r.group.startswith("set03")} == {True}


# ------------------------------------------------------------------------------------------ selection


def test_splits_give_train_and_test_frames(tree):
    result = scan(tree, train_split="train-all.txt", test_split="test-all")
    assert ids(result.frames) == TRAIN
    assert ids(result.test_frames) == TEST
    assert result.skipped_missing == [] and result.modalities == ("rgb", "thermal")
    assert str(tree) in result.notes[0] and "train-all.txt" in result.notes[0] and "test-all.txt" in result.notes[0]


def test_no_split_takes_every_frame_and_no_test_set(tree):
    result = scan(tree)
    assert ids(result.frames) == sorted(TRAIN + TEST) and result.test_frames is None


def test_test_split_frames_leave_the_training_frames(tree):
    result = scan(tree, test_split="test-all.txt")
    assert ids(result.frames) == TRAIN and ids(result.test_frames) == TEST
    assert any("2 frames of the test split" in note for note in result.notes)


def test_sets_videos_time_filter_training_frames_not_the_test_split(tree):
    assert {f.group for f in scan(tree, sets=["set03"]).frames} == {"set03/V000"}
    result = scan(tree, videos=["set00/V001"], test_split="test-all.txt")
    assert ids(result.frames) == [f"set00/V001/I{i:05d}" for i in range(3)]
    assert ids(result.test_frames) == TEST  # filters do not apply to the test split
    night = scan(tree, time="night", train_split="train-all.txt")
    assert {f.group for f in night.frames} == {"set03/V000"} and all(f.night for f in night.frames)
    day = scan(tree, time="day")
    assert {f.group for f in day.frames} == {"set00/V000", "set00/V001", "set06/V000"}


def test_stride_keeps_every_nth_frame_of_each_video(tree):
    result = scan(tree, stride=2, train_split="train-all.txt", test_split="test-all.txt")
    assert ids(result.frames) == ["set00/V000/I00000", "set00/V000/I00002", "set00/V001/I00000",
                                  "set00/V001/I00002", "set03/V000/I00000", "set03/V000/I00002"]
    assert ids(result.test_frames) == TEST  # stride does not apply to the test split


def test_empty_selection_names_the_filters(tree):
    with pytest.raises(UserError, match=r"no KAIST frames left.*sets = \['set03'\].*time = 'day'"):
        scan(tree, sets=["set03"], time="day")


def test_unknown_set_or_video_is_named(tree):
    with pytest.raises(UserError, match="data.kaist.sets: 'set3'"):
        scan(tree, sets=["set3"])
    with pytest.raises(UserError, match="data.kaist.videos: 'V000'.*setXX/V000"):
        scan(tree, videos=["V000"])


# ------------------------------------------------------------------------------------------ bad input


def test_root_empty_missing_or_without_images(tmp_path):
    with pytest.raises(UserError, match="data.kaist.root is empty; set it to the folder holding images/"):
        K.KaistSource(DataConfig(source="kaist"), seed=0).scan()
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "absent"))):
        scan(tmp_path / "absent")
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "images"))):
        scan(tmp_path)


def test_missing_split_file_lists_available_names(tree):
    with pytest.raises(UserError, match="data.kaist.train_split.*train-all-02.txt.*test-all.txt"):
        scan(tree, train_split="train-all-02")


def test_split_lines_matching_no_frame(tree, tmp_path):
    bogus = ["set01/V000/I00000", "set00/V000/I09999", "set00/V000/I00000.jpg", "set00/V009/I00000"]
    path = tmp_path / "bad.txt"
    path.write_bytes("".join(f"{line}\r\n" for line in TRAIN[:2] + bogus).encode())
    with pytest.raises(UserError) as e:
        scan(tree, train_split=str(path))
    message = str(e.value)
    assert str(path) in message and "4 of its 6 lines" in message
    assert all(line in message for line in bogus[:3]) and bogus[3] not in message


def test_duplicate_split_line(tree, tmp_path):
    path = tmp_path / "dup.txt"
    path.write_bytes("\r\n".join(TRAIN[:3] + [TRAIN[1]]).encode())
    with pytest.raises(UserError, match=re.escape(f"{path}: the line '{TRAIN[1]}' appears twice")):
        scan(tree, train_split=str(path))


def test_missing_partner_is_an_error_or_skipped_and_counted(own_tree):
    (own_tree / "images/set00/V000/lwir/I00001.jpg").unlink()
    (own_tree / "images/set03/V000/visible/I00002.jpg").unlink()
    refs, lonely = K.scan_tree(own_tree)
    assert lonely == ["set00/V000/I00001", "set03/V000/I00002"]
    assert next(r for r in refs if r.id == lonely[0]).thermal is None
    with pytest.raises(UserError) as e:
        scan(own_tree, train_split="train-all.txt")
    message = str(e.value)
    assert str(own_tree / "images/set00/V000/lwir/I00001.jpg") in message
    assert "2 of the selected" in message and 'set data.missing = "skip"' in message
    result = scan(own_tree, missing="skip", train_split="train-all.txt")
    assert result.skipped_missing == lonely
    assert ids(result.frames) == [i for i in TRAIN if i not in lonely]
    assert any("2 frames skipped" in note for note in result.notes)
    # a one-sided frame outside the selection is no concern of the scan
    assert scan(own_tree, videos=["set00/V001"]).skipped_missing == []


# ------------------------------------------------------------------------------------------ loading


def test_load_gives_uint8_rgb_and_one_channel_thermal(tree):
    source = K.KaistSource(data(tree, train_split="train-all.txt"), seed=0)
    refs = source.scan().frames[:5]
    frames = source.load(refs)
    assert frames.ids == ids(refs) and frames.night == [r.night for r in refs]
    assert frames.rgb.shape == (5, 3, 16, 16) and frames.rgb.dtype == torch.uint8
    assert frames.thermal.shape == (5, 1, 16, 16) and frames.thermal.dtype == torch.uint8
    assert frames.rgb.float().std() > 5 and frames.thermal.float().std() > 5  # real pictures, not blanks


def test_load_three_channel_thermal_repeats_the_channel(tree):
    source = K.KaistSource(data(tree, thermal_channels=3), seed=0)
    frames = source.load(source.scan().frames[:3])
    assert frames.thermal.shape == (3, 3, 16, 16)
    assert (frames.thermal[:, 0] == frames.thermal[:, 1]).all() and (frames.thermal[:, 0] == frames.thermal[:, 2]).all()


def test_truncated_jpeg_is_a_user_error_naming_it(own_tree):
    bad = own_tree / "images/set00/V001/lwir/I00001.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    source = K.KaistSource(data(own_tree, videos=["set00/V001"]), seed=0)
    with pytest.raises(UserError, match=re.escape(str(bad))):
        source.load(source.scan().frames)


# ------------------------------------------------------------------------------------------ inspect


def test_inspect_counts_the_tree(own_tree):
    (own_tree / "images/set03/V000/visible/I00002.jpg").unlink()
    report = K.inspect(own_tree, headers="all")
    assert report["pairs"] == 11 and report["frames"] == 12
    assert report["per_set"] == {"set00": 7, "set03": 2, "set06": 2}
    assert report["per_video"] == {"set00/V000": 4, "set00/V001": 3, "set03/V000": 2, "set06/V000": 2}
    assert report["per_time"] == {"day": 9, "night": 2}
    assert report["splits"]["train-all.txt"]["lines"] == 10
    assert report["splits"]["train-all.txt"]["matched"] == 10 and report["splits"]["train-all.txt"]["pairs"] == 9
    assert report["splits"]["test-all.txt"]["matched"] == 2 and report["splits"]["test-all.txt"]["duplicates"] == 0
    assert report["missing_partner"] == {"count": 1,
                                         "examples": [str(own_tree / "images/set03/V000/visible/I00002.jpg")]}
    assert report["headers"]["checked"] == 23 and report["headers"]["sizes"] == {f"{W}x{H}": 23}
    assert report["headers"]["modes"] == {"RGB": 23} and report["headers"]["unreadable"]["count"] == 0
    assert report["examples"][0] == "set00/V000/I00000"
    assert K.inspect(own_tree, sample=4)["headers"]["checked"] == 4


def test_inspect_decode_finds_a_truncated_file_that_headers_miss(own_tree):
    bad = own_tree / "images/set00/V000/visible/I00003.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    assert K.inspect(own_tree, headers="all")["headers"]["unreadable"]["count"] == 0
    unreadable = K.inspect(own_tree, headers="decode")["headers"]["unreadable"]
    assert unreadable == {"count": 1, "examples": [str(bad)]}


def placeholder_tree(root: Path, pairs: int, per_video: int = 1000) -> Path:
    """`pairs` pairs of EMPTY files in KAIST's layout (day and night sets), as a stand-in for a full tree."""
    for k in range(pairs):
        group, i = divmod(k, per_video)
        folder = root / "images" / f"set{group % 12:02d}" / f"V{group // 12:03d}"
        if i == 0:
            (folder / "visible").mkdir(parents=True)
            (folder / "lwir").mkdir()
        (folder / "visible" / f"I{i:05d}.jpg").touch()
        (folder / "lwir" / f"I{i:05d}.jpg").touch()
    return root


def test_inspect_reports_empty_placeholders_unreadable_quickly(tmp_path):
    root = placeholder_tree(tmp_path, 2000)
    start = time.perf_counter()
    report = K.inspect(root)
    elapsed = time.perf_counter() - start
    assert report["pairs"] == 2000 and report["per_set"] == {"set00": 1000, "set01": 1000}
    assert report["headers"]["checked"] == 200 and report["headers"]["unreadable"]["count"] == 200
    assert len(report["headers"]["unreadable"]["examples"]) == 3 and report["headers"]["sizes"] == {}
    assert elapsed < 2.0


def test_inspect_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="headers = 'some'"):
        K.inspect(tmp_path, headers="some")
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "images"))):
        K.inspect(tmp_path)


# ------------------------------------------------------------------------- data.resize on 2:1 frames


@pytest.mark.parametrize("policy", ["crop", "pad", "squash"])
def test_resize_policy_fits_kaist_frames_as_configured(tmp_path, policy):
    """KAIST frames are 5:4 (640 x 512); a 2:1 frame of left / centre / right bands (lwir as three equal
    channels, as KAIST stores it) shows what each `data.resize` does: crop keeps only the centre band,
    pad adds black bars and keeps every band, squash keeps every band at full height."""
    rgb_bands, grey_bands = ((200, 10, 0), (0, 200, 30), (40, 0, 200)), (60, 120, 200)
    for folder, frame in (("visible", banded(rgb_bands)), ("lwir", np.repeat(banded(grey_bands)[..., None], 3, 2))):
        (tmp_path / "images/set00/V000" / folder).mkdir(parents=True)
        Image.fromarray(frame).save(tmp_path / "images/set00/V000" / folder / "I00000.png")
    config = DataConfig(source="kaist", kaist={"root": str(tmp_path)}, image_size=16, resize=policy)
    source = K.KaistSource(config, seed=0)
    frames = source.load(source.scan().frames)
    assert frames.ids == ["set00/V000/I00000"]
    assert_fitted(frames.rgb[0].permute(1, 2, 0).numpy(), policy, rgb_bands)
    assert_fitted(frames.thermal[0, 0].numpy(), policy, grey_bands)
