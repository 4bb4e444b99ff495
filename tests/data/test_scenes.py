"""Tests for the procedural paired RGB + thermal street scenes."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from genaug.data import scenes as S


def _find(seed, pred, width=160, height=128, limit=300):
    for i in range(limit):
        sc = S.sample_scene(seed, i, width, height)
        if pred(sc):
            return sc
    raise AssertionError("no scene matched")  # pragma: no cover


# ------------------------------------------------------------------ determinism
def test_same_seed_and_index_give_identical_frames():
    a, b = S.sample_scene(3, 17), S.sample_scene(3, 17)
    assert np.array_equal(S.render_rgb(a), S.render_rgb(b))
    assert np.array_equal(S.render_thermal(a), S.render_thermal(b))


def test_single_frame_equals_same_index_in_batch():
    rgb1, th1, tags1 = S.render_frames(5, [17])
    rgb, th, tags = S.render_frames(5, range(20))
    assert np.array_equal(rgb1[0], rgb[17])
    assert np.array_equal(th1[0], th[17])
    assert tags1[0] == tags[17]
    # the batch path equals the one-scene renderers
    sc = S.sample_scene(5, 17)
    assert np.array_equal(S.render_rgb(sc), rgb[17])
    assert np.array_equal(S.render_thermal(sc), th[17])


def test_different_seed_or_index_gives_different_frames():
    rgb_a, th_a, _ = S.render_frames(0, [4])
    rgb_b, th_b, _ = S.render_frames(1, [4])
    rgb_c, th_c, _ = S.render_frames(0, [5])
    assert not np.array_equal(rgb_a, rgb_b)
    assert not np.array_equal(th_a, th_b)
    assert not np.array_equal(rgb_a, rgb_c)


def test_frames_vary_between_indices():
    rgb, th, tags = S.render_frames(0, range(30))
    assert len({(t["n_people"], t["n_cars"]) for t in tags}) > 4
    assert len({rgb[i].tobytes() for i in range(30)}) == 30
    horizons = {round(S.sample_scene(0, i).horizon, 3) for i in range(30)}
    assert len(horizons) == 30


# ------------------------------------------------------ thermal vs RGB colours
def test_thermal_does_not_depend_on_clothing_or_car_colours():
    for night in (False, True):
        sc = _find(11, lambda s: s.night == night and s.pedestrians and s.cars)
        recoloured = dataclasses.replace(
            sc,
            pedestrians=[dataclasses.replace(p, shirt_color=(255, 0, 255), pants_color=(0, 255, 0))
                         for p in sc.pedestrians],
            cars=[dataclasses.replace(c, body_color=(0, 200, 255)) for c in sc.cars],
        )
        assert not np.array_equal(S.render_rgb(sc), S.render_rgb(recoloured))
        assert S.render_thermal(sc).tobytes() == S.render_thermal(recoloured).tobytes()


def test_thermal_does_depend_on_geometry_and_noise_seed():
    sc = _find(11, lambda s: not s.night and s.pedestrians)
    moved = dataclasses.replace(
        sc, pedestrians=[dataclasses.replace(p, x=p.x + 0.2 * sc.width) for p in sc.pedestrians])
    assert not np.array_equal(S.render_thermal(sc), S.render_thermal(moved))
    reseeded = dataclasses.replace(sc, noise_seed=sc.noise_seed + 1)
    a, b = S.render_thermal(sc).astype(int), S.render_thermal(reseeded).astype(int)
    assert not np.array_equal(a, b)
    assert np.abs(a - b).mean() < 8  # only the noise differs


# ------------------------------------------------------------ thermal semantics
def test_pedestrians_hotter_than_sky_by_day():
    checked = 0
    for i in range(60):
        sc = S.sample_scene(2, i)
        if sc.night or not sc.pedestrians:
            continue
        th, lab = S.render_thermal(sc).astype(float), S.render_labels(sc)
        people, sky = lab == S.PEDESTRIAN, lab == S.SKY
        if people.sum() < 10 or sky.sum() < 10:
            continue
        assert th[people].mean() > th[sky].mean() + 60
        checked += 1
        if checked == 5:
            break
    assert checked == 5


def test_sky_is_coldest_and_people_hottest_class():
    for i in range(12):
        sc = S.sample_scene(0, i)
        th, lab = S.render_thermal(sc).astype(float), S.render_labels(sc)
        means = {c: th[lab == c].mean() for c in np.unique(lab) if (lab == c).sum() >= 20}
        assert min(means, key=means.get) == S.SKY
        if S.PEDESTRIAN in means:
            assert max(means, key=means.get) == S.PEDESTRIAN


def test_head_hotter_than_clothing():
    sc = _find(7, lambda s: any(p.height > 45 for p in s.pedestrians))
    p = max(sc.pedestrians, key=lambda q: q.height)
    # draw the pedestrian alone on the scene so nothing in front of it interferes
    alone = dataclasses.replace(sc, pedestrians=[p], cars=[], trees=[], lamps=[])
    th = S.render_thermal(alone).astype(float)
    top = p.foot_y - p.height
    x = int(round(p.x))
    head = th[int(round(top + 0.08 * p.height)), x - 1:x + 2].mean()
    torso = th[int(round(top + 0.32 * p.height)), x - 1:x + 2].mean()
    assert head > torso + 15


def test_night_road_cooler_than_day_road():
    def bottom_centre(seed, night, n=6):
        vals = []
        for i in range(200):
            sc = S.sample_scene(seed, i)
            if sc.night != night:
                continue
            th = S.render_thermal(sc)
            h, w = th.shape
            vals.append(th[int(0.88 * h):, int(0.4 * w):int(0.6 * w)].mean())
            if len(vals) == n:
                break
        return float(np.mean(vals))

    assert bottom_centre(0, night=True) < bottom_centre(0, night=False) - 30


def test_night_rgb_is_dark_and_day_is_not():
    rgb, _, tags = S.render_frames(0, range(40))
    night = np.array([t["night"] for t in tags])
    assert night.any() and (~night).any()
    brightness = rgb.reshape(len(tags), -1).mean(axis=1)
    assert brightness[night].max() < brightness[~night].min()
    # sky near black at night: top rows
    top_rows = rgb[night][:, :3].reshape(-1, 3).mean(axis=0)
    assert top_rows.max() < 40


def test_thermal_corners_darker_than_centre_on_flat_scene():
    sc = S.sample_scene(0, 1)
    # horizon far above the frame and a very wide road: the whole canvas is road
    far_up = -100.0 * sc.height
    road = dataclasses.replace(sc.road, top_y=far_up, vanish_x=sc.width / 2,
                               bottom_left=-10 * sc.width, bottom_right=11 * sc.width,
                               marks=(), crosswalk=())
    flat = dataclasses.replace(sc, horizon=far_up, road=road, buildings=[], far_buildings=[],
                               pedestrians=[], cars=[], trees=[], lamps=[])
    assert (S.render_labels(flat) == S.ROAD).all()
    th = S.render_thermal(flat).astype(float)
    h, w = th.shape
    centre = th[h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8].mean()
    corners = np.mean([th[:8, :8].mean(), th[:8, -8:].mean(), th[-8:, :8].mean(), th[-8:, -8:].mean()])
    assert corners < centre - 5
    assert 1.0 < th[h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8].std() < 6.0  # sensor noise present


# ------------------------------------------------------------- shapes and tags
def test_render_frames_shapes_and_tags():
    rgb, th, tags = S.render_frames(0, range(6))
    assert rgb.shape == (6, 128, 160, 3) and rgb.dtype == np.uint8
    assert th.shape == (6, 128, 160) and th.dtype == np.uint8
    assert [t["id"] for t in tags] == [S.frame_id(i) for i in range(6)]
    for i, t in enumerate(tags):
        sc = S.sample_scene(0, i)
        assert t == {"id": S.frame_id(i), "index": i, "night": sc.night,
                     "n_people": len(sc.pedestrians), "n_cars": len(sc.cars)}
        assert 0 <= t["n_people"] <= 5 and 0 <= t["n_cars"] <= 3


def test_non_default_size():
    rgb, th, tags = S.render_frames(1, [0, 3, 9], width=80, height=64)
    assert rgb.shape == (3, 64, 80, 3) and th.shape == (3, 64, 80)
    assert rgb.dtype == np.uint8 and th.dtype == np.uint8
    assert rgb.std() > 10 and th.std() > 5


def test_geometry_scales_with_canvas_size():
    # the same scene at 640x512 and 160x128 has the same layout
    for i in range(3):
        big = S.render_labels(S.sample_scene(0, i, 640, 512))
        small = S.render_labels(S.sample_scene(0, i, 160, 128))
        assert (big[2::4, 2::4] == small).mean() > 0.9


def test_night_fraction_respected():
    nights = [S.sample_scene(0, i).night for i in range(200)]
    assert 0.15 <= np.mean(nights) <= 0.45
    assert not any(S.sample_scene(0, i, night_fraction=0.0).night for i in range(20))
    assert all(S.sample_scene(0, i, night_fraction=1.0).night for i in range(20))


def test_frame_id():
    assert S.frame_id(17) == "scene_000017"
    assert S.frame_id(0) == "scene_000000"
    assert S.frame_id(123456) == "scene_123456"


def test_invalid_arguments():
    with pytest.raises(ValueError):
        S.sample_scene(-1, 0)
    with pytest.raises(ValueError):
        S.sample_scene(0, 0, night_fraction=1.5)


# ------------------------------------------------------------------- folders
def test_write_paired_folder(tmp_path):
    S.write_paired_folder(tmp_path, n=5, seed=2, width=80, height=64)
    rgb_files = sorted(p.stem for p in (tmp_path / "rgb").glob("*.png"))
    th_files = sorted(p.stem for p in (tmp_path / "thermal").glob("*.png"))
    assert rgb_files == th_files == [S.frame_id(i) for i in range(5)]
    with Image.open(tmp_path / "rgb" / "scene_000003.png") as im:
        assert im.mode == "RGB" and im.size == (80, 64)
        rgb3 = np.asarray(im)
    with Image.open(tmp_path / "thermal" / "scene_000003.png") as im:
        assert im.mode == "L" and im.size == (80, 64)
        th3 = np.asarray(im)
    rgb, th, _ = S.render_frames(2, [3], width=80, height=64)
    assert np.array_equal(rgb3, rgb[0]) and np.array_equal(th3, th[0])
    with open(tmp_path / "tags.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == rgb_files
    for i, r in enumerate(rows):
        sc = S.sample_scene(2, i, 80, 64)
        assert r["night"] == str(int(sc.night))
        assert int(r["n_people"]) == len(sc.pedestrians)
        assert int(r["n_cars"]) == len(sc.cars)


# ------------------------------------------------------------------ data.resize
def test_scenes_source_fits_its_frames_by_data_resize():
    """The source renders 2:1 frames (64 x 32) and fits them by `data.resize`: pad's bars are 16 of 64
    rows, so output rows 0-1 of 16 are black whatever the scene; crop and squash are fit_square's (whose
    known answers are in test_images); the three policies give three different sets."""
    from genaug.config import DataConfig
    from genaug.data.images import fit_square
    from genaug.data.sources import ScenesSource

    rgb, thermal, _ = S.render_frames(0, [0, 1], 64, 32, 0.3)
    loaded = {}
    for policy in ("crop", "pad", "squash"):
        data = DataConfig(scenes={"width": 64, "height": 32, "n_frames": 2, "night_fraction": 0.3},
                          image_size=16, resize=policy)
        source = ScenesSource(data, seed=0)
        frames = source.load(source.scan().frames)
        assert np.array_equal(frames.rgb.permute(0, 2, 3, 1).numpy(), [fit_square(f, 16, policy) for f in rgb])
        assert np.array_equal(frames.thermal[:, 0].numpy(), [fit_square(f, 16, policy) for f in thermal])
        loaded[policy] = frames
    assert not loaded["pad"].rgb[:, :, :2].any() and not loaded["pad"].thermal[:, :, :2].any()
    assert loaded["crop"].rgb[:, :, :2].any() and loaded["squash"].rgb[:, :, :2].any()
    assert not torch.equal(loaded["crop"].rgb, loaded["squash"].rgb)
