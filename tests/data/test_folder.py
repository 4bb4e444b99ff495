"""Tests for the folder data source: pairing by stem, errors a user can fix, 16-bit thermal, inspect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genaug.config import DataConfig
from genaug.data.folder import FolderSource, inspect, list_images
from genaug.errors import UserError

from .known_answers import SIDE, assert_fitted, banded


def _rgb(path, seed=0, size=(20, 16)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _l8(path, value=100, size=(20, 16)):
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).save(path)


def _t16(path, array):
    image = Image.fromarray(np.asarray(array, np.uint16))
    assert image.mode == "I;16"
    image.save(path)


def _jpeg3(path, value=120, size=(20, 16)):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, quality=95)


def _config(rgb="", thermal="", **kw) -> DataConfig:
    policy = kw.pop("thermal_16bit", "full")
    return DataConfig(source="folder", folder={"rgb": str(rgb), "thermal": str(thermal), "thermal_16bit": policy},
                      image_size=16, **kw)


@pytest.fixture
def paired(tmp_path):
    rgb, th = tmp_path / "rgb", tmp_path / "thermal"
    rgb.mkdir(), th.mkdir()
    _rgb(rgb / "a.jpg", 0)
    _rgb(rgb / "b.png", 1)
    _rgb(rgb / "c.JPG", 2)
    _l8(th / "a.png", 50)
    _t16(th / "b.png", np.full((16, 20), 30000))
    _jpeg3(th / "c.jpeg", 200)
    (rgb / "notes.txt").write_text("not an image")
    (rgb / ".hidden.png").write_bytes(b"")
    (rgb / "sub").mkdir()
    _rgb(rgb / "sub" / "deep.png")
    return rgb, th


# ----------------------------------------------------------------------------------------- pairing


def test_pairs_by_stem_across_extensions(paired):
    rgb, th = paired
    scan = FolderSource(_config(rgb, th), seed=0).scan()
    assert [f.id for f in scan.frames] == ["a", "b", "c"]
    a = scan.frames[0]
    assert a.rgb == rgb / "a.jpg" and a.thermal == th / "a.png"
    assert a.night is None and a.group == ""
    assert scan.frames[2].rgb == rgb / "c.JPG" and scan.frames[2].thermal == th / "c.jpeg"
    assert scan.modalities == ("rgb", "thermal")
    assert scan.skipped_missing == []
    assert scan.test_frames is None
    notes = " ".join(scan.notes)
    assert str(rgb.resolve()) in notes and str(th.resolve()) in notes
    assert "thermal_16bit = 'full'" in notes


def test_list_images_is_flat_sorted_and_case_insensitive(paired):
    rgb, _ = paired
    images = list_images(rgb)
    assert list(images) == ["a", "b", "c"]  # no txt, no hidden file, no subfolder
    assert images["c"].name == "c.JPG"


def test_missing_partner_errors_naming_file_and_count(paired):
    rgb, th = paired
    _rgb(rgb / "d.png", 3)
    _l8(th / "e.png")
    with pytest.raises(UserError) as e:
        FolderSource(_config(rgb, th), seed=0).scan()
    message = str(e.value)
    assert "d.png" in message and "2 image(s)" in message
    assert 'data.missing = "skip"' in message
    assert "\n" not in message


def test_missing_partner_skip_counts(paired):
    rgb, th = paired
    _rgb(rgb / "d.png", 3)
    _l8(th / "e.png")
    scan = FolderSource(_config(rgb, th, missing="skip"), seed=0).scan()
    assert [f.id for f in scan.frames] == ["a", "b", "c"]
    assert scan.skipped_missing == ["d", "e"]


def test_no_common_stem_is_an_error_even_when_skipping(tmp_path):
    rgb, th = tmp_path / "rgb", tmp_path / "th"
    rgb.mkdir(), th.mkdir()
    _rgb(rgb / "a.png")
    _l8(th / "b.png")
    with pytest.raises(UserError, match="no file stem is in both"):
        FolderSource(_config(rgb, th, missing="skip"), seed=0).scan()


def test_duplicate_stem_names_both_files(paired):
    rgb, th = paired
    _rgb(rgb / "a.png", 5)
    with pytest.raises(UserError) as e:
        FolderSource(_config(rgb, th), seed=0).scan()
    message = str(e.value)
    assert "a.jpg" in message and "a.png" in message and "data.folder.rgb" in message


# ----------------------------------------------------------------------------------- one modality


def test_rgb_only(paired):
    rgb, _ = paired
    source = FolderSource(_config(rgb=rgb), seed=0)
    scan = source.scan()
    assert scan.modalities == ("rgb",)
    assert all(f.thermal is None for f in scan.frames)
    frames = source.load(scan.frames)
    assert frames.rgb.shape == (3, 3, 16, 16) and frames.rgb.dtype == torch.uint8
    assert frames.thermal is None
    with pytest.raises(UserError, match="no thermal images"):
        frames.modality("thermal")
    assert not any("16-bit" in note for note in scan.notes)


def test_thermal_only(paired):
    _, th = paired
    source = FolderSource(_config(thermal=th), seed=0)
    scan = source.scan()
    assert scan.modalities == ("thermal",)
    assert [f.id for f in scan.frames] == ["a", "b", "c"]
    assert all(f.rgb is None for f in scan.frames)
    frames = source.load(scan.frames)
    assert frames.rgb is None
    assert frames.thermal.shape == (3, 1, 16, 16) and frames.thermal.dtype == torch.uint8
    assert frames.night == [None, None, None]


# ----------------------------------------------------------------------------------- folder errors


def test_no_folder_set():
    with pytest.raises(UserError, match="data.folder: set rgb, thermal or both"):
        FolderSource(_config(), seed=0).scan()


def test_folder_missing_names_key_and_path(tmp_path, paired):
    rgb, _ = paired
    gone = tmp_path / "nope"
    with pytest.raises(UserError) as e:
        FolderSource(_config(rgb, gone), seed=0).scan()
    assert "data.folder.thermal" in str(e.value) and str(gone) in str(e.value)


def test_folder_is_a_file(tmp_path):
    path = tmp_path / "x.png"
    _rgb(path)
    with pytest.raises(UserError, match=r"data\.folder\.rgb.*not a folder"):
        FolderSource(_config(rgb=path), seed=0).scan()


def test_empty_folder_names_key(tmp_path, paired):
    _, th = paired
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(UserError) as e:
        FolderSource(_config(empty, th), seed=0).scan()
    assert "data.folder.rgb" in str(e.value) and "no images" in str(e.value)


# -------------------------------------------------------------------------------------- loading


def test_load_shapes_and_dtypes(paired):
    rgb, th = paired
    source = FolderSource(_config(rgb, th), seed=0)
    frames = source.load(source.scan().frames)
    assert frames.ids == ["a", "b", "c"]
    assert frames.rgb.shape == (3, 3, 16, 16) and frames.rgb.dtype == torch.uint8
    assert frames.thermal.shape == (3, 1, 16, 16) and frames.thermal.dtype == torch.uint8
    assert int(frames.thermal[0].float().mean().round()) == 50  # 8-bit as is
    assert abs(frames.thermal[2].float().mean().item() - 200) <= 2  # 3 equal channels -> one


def test_thermal_channels_3_repeats(paired):
    rgb, th = paired
    source = FolderSource(_config(rgb, th, thermal_channels=3), seed=0)
    thermal = source.load(source.scan().frames).thermal
    assert thermal.shape == (3, 3, 16, 16)
    assert torch.equal(thermal[:, 0], thermal[:, 1]) and torch.equal(thermal[:, 0], thermal[:, 2])


def _thermal16(tmp_path, array, policy):
    th = tmp_path / f"t16_{policy}"
    th.mkdir(exist_ok=True)
    _t16(th / "x.png", array)
    source = FolderSource(_config(thermal=th, thermal_16bit=policy, resize="squash"), seed=0)
    scan = source.scan()
    return source.load(scan.frames).thermal[0, 0].numpy(), scan


def test_16bit_constant_full_is_255(tmp_path):
    out, scan = _thermal16(tmp_path, np.full((16, 16), 65535), "full")
    assert (out == 255).all()
    assert any("thermal_16bit = 'full'" in note for note in scan.notes)


def test_16bit_ramp_minmax_vs_full(tmp_path):
    ramp = np.tile(np.linspace(1000, 2000, 16).round(), (16, 1))
    full, _ = _thermal16(tmp_path, ramp, "full")
    minmax, scan = _thermal16(tmp_path, ramp, "minmax")
    assert minmax.min() <= 2 and minmax.max() >= 253
    assert 3 <= full.min() and full.max() <= 9 and full.max() - full.min() <= 5  # 1000/65535*255 = 3.9, 2000 -> 7.8
    assert any("minmax" in note for note in scan.notes)


def test_truncated_png_load_names_file(paired):
    rgb, th = paired
    path = th / "b.png"
    _t16(path, np.random.default_rng(0).integers(0, 65536, (16, 20)))  # noise: pixel data is most of the file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    source = FolderSource(_config(rgb, th), seed=0)
    scan = source.scan()  # paths only: the scan does not decode
    with pytest.raises(UserError) as e:
        source.load(scan.frames)
    assert str(path) in str(e.value)


# -------------------------------------------------------------------------------------- inspect


def test_inspect_reports_modes_pairs_and_unreadable(paired):
    rgb, th = paired
    (th / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _rgb(rgb / "d.png", 3)
    report = inspect(rgb, th)
    t = report["folders"]["thermal"]
    assert t["images"] == 4 and report["folders"]["rgb"]["images"] == 4
    assert {"L", "I;16", "RGB"} <= set(t["modes"])
    assert t["bit_depth"][16] == 1
    assert t["unreadable"]["count"] == 1 and "broken.png" in t["unreadable"]["first"][0]
    assert t["resolutions"] == {"20x16": 3}
    assert report["paired"] == 3
    assert report["missing_partner"]["count"] == 2  # d (rgb) and broken (thermal)
    assert report["example_ids"] == ["a", "b", "c"]


def test_inspect_decode_finds_truncated_and_16bit_range(paired):
    rgb, th = paired
    _t16(th / "b.png", np.tile(np.linspace(1000, 2000, 20).round(), (16, 1)))
    a = th / "a.png"
    _rgb(a, 7)  # noise: the pixel data is most of the file
    a.write_bytes(a.read_bytes()[: a.stat().st_size // 2])  # header intact, pixel data cut
    sampled = inspect(None, th, headers="sample")
    assert sampled["folders"]["thermal"]["unreadable"]["count"] == 0  # header still parses
    decoded = inspect(None, th, headers="decode")["folders"]["thermal"]
    assert decoded["unreadable"]["count"] == 1 and "a.png" in decoded["unreadable"]["first"][0]
    assert decoded["high_bit_range"] == [1000, 2000]


def test_inspect_duplicates_and_sampling(tmp_path):
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for i in range(10):
        _l8(rgb / f"f{i:02d}.png", i)
    _l8(rgb / "f00.jpg")
    report = inspect(rgb, None, headers="sample", sample=4)
    info = report["folders"]["rgb"]
    assert info["checked"] == 4 and info["images"] == 11
    assert info["duplicate_stems"] == {"f00": ["f00.jpg", "f00.png"]}
    assert report["paired"] is None and report["frames"] == 10
    assert inspect(rgb, None, headers="all")["folders"]["rgb"]["checked"] == 10
    with pytest.raises(UserError, match="headers"):
        inspect(rgb, None, headers="some")


# ------------------------------------------------------------------------- data.resize on 2:1 frames

RGB_BANDS, GREY_BANDS = ((200, 10, 0), (0, 200, 30), (40, 0, 200)), (60, 120, 200)


def test_resize_policy_fits_non_square_frames_as_configured_and_keys_the_cache(tmp_path, monkeypatch):
    """A 2:1 RGB + thermal pair with left / centre / right bands, loaded as the study loads a set (through
    the decoded-set cache) under each `data.resize`: crop keeps only the centre band, pad adds black bars
    and keeps every band, squash keeps every band at full height (known_answers.assert_fitted). The
    policies' sets are cached apart: a set decoded under one policy is never served for another."""
    from genaug.data.cache import load_cached

    monkeypatch.setenv("GENAUG_CACHE", str(tmp_path / "cache"))
    rgb, th = tmp_path / "rgb", tmp_path / "thermal"
    rgb.mkdir(), th.mkdir()
    Image.fromarray(banded(RGB_BANDS)).save(rgb / "a.png")
    Image.fromarray(banded(GREY_BANDS)).save(th / "a.png")
    for again in (False, True):
        for policy in ("crop", "pad", "squash"):
            data = _config(rgb, th, resize=policy)
            assert data.image_size == SIDE
            source = FolderSource(data, seed=0)
            frames, hit = load_cached(source, source.scan().frames, data, 0, source.modalities)
            assert hit is again, policy
            assert_fitted(frames.rgb[0].permute(1, 2, 0).numpy(), policy, RGB_BANDS)
            assert_fitted(frames.thermal[0, 0].numpy(), policy, GREY_BANDS)
