"""Procedural paired RGB + thermal street scenes (KAIST-like).

A frame is fully described by a :class:`Scene`, which :func:`sample_scene` draws
from ``np.random.default_rng([seed, index])``: the same ``(seed, index)`` always
gives the same scene, whichever other frames are rendered alongside it.
Rendering is a pure function of the scene:

* :func:`render_rgb` paints a visible-light image (day, or night with a dark sky,
  lit windows, street lamps and car lights);
* :func:`render_thermal` paints a single long-wave-infrared channel from the same
  geometry, with a temperature *per object class* (people hottest, car engines and
  tyres hot, road warm by day and cool by night, sky coldest ...), never from the
  RGB colours, followed by optical blur, seeded sensor noise and vignetting.

So RGB -> thermal is learnable (same shapes, class-dependent temperatures) but it
is not a colour lookup. Every size derives from the canvas width and height, so
a frame looks alike from 80x64 up to 640x512 (the KAIST size).

Only numpy and Pillow are used; a 160x128 pair renders in a few milliseconds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "CLASS_NAMES",
    "Building",
    "Road",
    "Pedestrian",
    "Car",
    "Tree",
    "Lamp",
    "Scene",
    "sample_scene",
    "render_rgb",
    "render_thermal",
    "render_labels",
    "render_frames",
    "frame_id",
    "frame_content",
    "write_paired_folder",
    "MAX_CARS",
]

RGB = tuple[int, int, int]
Point = tuple[float, float]
Box = tuple[float, float, float, float]

# Per-pixel class ids produced by :func:`render_labels` (index into CLASS_NAMES).
CLASS_NAMES: tuple[str, ...] = (
    "sky", "building", "window", "ground", "road", "lane_mark",
    "tree", "pedestrian", "car", "lamp",
)
SKY, BUILDING, WINDOW, GROUND, ROAD, LANE_MARK, TREE, PEDESTRIAN, CAR, LAMP = range(10)
MAX_CARS = 3  # a scene holds 0..MAX_CARS cars (fewer when a car finds no free place on the road)


# --------------------------------------------------------------------------- #
# Scene description
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Building:
    """A flat facade standing on the horizon, with a grid of windows."""

    x0: float
    x1: float
    top: float
    bottom: float
    color: RGB
    windows: tuple[Box, ...]      # (x0, y0, x1, y1) per window
    lit: tuple[bool, ...]         # one flag per window
    glass_color: RGB
    lit_color: RGB
    heat: float                   # thermal offset of this facade
    far: bool = False             # background (hazy) row


@dataclass(frozen=True)
class Road:
    """A road in perspective: a trapezoid from the vanishing point to the bottom edge."""

    vanish_x: float
    top_y: float                  # the horizon
    bottom_left: float            # road edges where they meet the bottom of the frame
    bottom_right: float
    sidewalk_width: float         # sidewalk width at the bottom of the frame
    color: RGB
    mark_color: RGB
    sidewalk_color: RGB
    curb_color: RGB
    marks: tuple[tuple[Point, ...], ...]       # dashed lane marks / edge lines (polygons)
    crosswalk: tuple[tuple[Point, ...], ...]   # zebra stripes (polygons), maybe empty


@dataclass(frozen=True)
class Pedestrian:
    x: float                      # centre line
    foot_y: float                 # where the feet touch the ground
    height: float                 # pixels, head to feet
    shirt_color: RGB
    pants_color: RGB
    skin_color: RGB
    hair_color: RGB
    stride: float                 # signed half-distance between the feet (pixels)
    arm_swing: float              # signed hand offset (pixels)
    heat: float                   # body-temperature offset (thermal only)


@dataclass(frozen=True)
class Car:
    """A car seen from the side; ``facing`` is +1 (front to the right) or -1."""

    x0: float
    x1: float
    bottom: float                 # ground contact line
    height: float
    facing: int
    body_color: RGB
    glass_color: RGB
    engine_heat: float            # 0..1, scales the engine hot spot
    lights_on: bool


@dataclass(frozen=True)
class Tree:
    x: float
    base_y: float
    height: float
    crown_width: float
    trunk_color: RGB
    crown_color: RGB


@dataclass(frozen=True)
class Lamp:
    x: float
    base_y: float
    height: float
    on: bool


@dataclass
class Scene:
    """Everything needed to render one frame; rendering is a pure function of it."""

    index: int
    night: bool
    width: int
    height: int
    horizon: float
    sky_top: RGB
    sky_bottom: RGB
    light: float                  # global illumination factor applied to non-emissive colours
    tint: tuple[float, float, float]   # per-channel illumination tint
    shadow_strength: float        # 0 at night, weaker when overcast
    shadow_dx: float              # horizontal shadow offset per pixel of object height
    verge_color: RGB              # ground beyond the sidewalks
    verge_grass: bool             # grass (cools fast) or pavement, thermal class of the verge
    road: Road
    far_buildings: list[Building] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    pedestrians: list[Pedestrian] = field(default_factory=list)
    cars: list[Car] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    lamps: list[Lamp] = field(default_factory=list)
    ambient: float = 0.0          # thermal offset of the environment (not of people)
    noise_seed: int = 0           # seeds the thermal sensor noise

    @property
    def n_people(self) -> int:
        return len(self.pedestrians)

    @property
    def n_cars(self) -> int:
        return len(self.cars)


# --------------------------------------------------------------------------- #
# Palettes (daylight reflectances; lighting is applied at render time)
# --------------------------------------------------------------------------- #
_BUILDING_COLORS = [
    (150, 150, 150), (120, 115, 110), (172, 162, 146), (140, 82, 66), (162, 104, 82),
    (96, 106, 122), (186, 180, 170), (112, 120, 110), (202, 190, 172), (84, 88, 98),
    (190, 170, 130), (130, 96, 80),
]
_SHIRT_COLORS = [
    (22, 22, 26), (32, 42, 84), (122, 122, 128), (222, 222, 216), (172, 32, 38),
    (42, 112, 62), (202, 182, 142), (102, 72, 46), (52, 92, 172), (212, 172, 42),
    (132, 52, 122), (232, 122, 42), (60, 60, 64),
]
_PANTS_COLORS = [
    (36, 46, 78), (26, 26, 30), (92, 92, 98), (172, 152, 112), (82, 62, 46),
    (52, 62, 92), (120, 40, 40),
]
_SKIN_COLORS = [
    (252, 220, 192), (236, 192, 152), (202, 152, 112), (162, 112, 76), (112, 76, 52),
    (82, 56, 40),
]
_HAIR_COLORS = [(22, 16, 12), (62, 42, 26), (112, 76, 42), (202, 172, 112), (152, 152, 152)]
_CAR_COLORS = [
    (232, 232, 232), (26, 26, 30), (162, 166, 172), (102, 106, 112), (172, 26, 32),
    (32, 62, 142), (32, 72, 52), (202, 192, 162), (222, 202, 42), (90, 30, 30),
]
_CROWN_COLORS = [(52, 102, 46), (72, 122, 52), (42, 82, 42), (92, 122, 62), (62, 92, 40)]
_TRUNK_COLORS = [(92, 66, 44), (76, 58, 42), (110, 86, 62)]
_SHOE = (30, 28, 28)
_TYRE = (22, 22, 24)
_HUB = (150, 150, 155)
_POLE = (70, 72, 76)

# Thermal grey levels (0..255) per class; environment classes get scene.ambient added.
# (day, night) pairs where the value depends on time of day.
_T_SKY_TOP = (28.0, 14.0)
_T_SKY_HORIZON = (62.0, 36.0)
_T_BUILDING = (120.0, 100.0)
_T_GLASS = -30.0                  # relative to the facade (reflects the cold sky)
_T_LIT = (12.0, 48.0)             # relative to the facade
_T_SIDEWALK = (136.0, 94.0)
_T_GRASS = (108.0, 66.0)
_T_ROAD = (158.0, 80.0)
_T_MARK = (132.0, 74.0)
_T_CROWN = (92.0, 70.0)
_T_TRUNK = (104.0, 82.0)
_T_POLE = (112.0, 86.0)
_T_LAMP_ON = 178.0
_T_CAR_BODY = (128.0, 108.0)
_T_CAR_GLASS = (84.0, 62.0)
_T_ENGINE = 208.0
_T_TYRE = 182.0
_T_HUB = 160.0
_T_HEADLIGHT = 150.0
# People (not affected by ambient): head hottest, then skin, then clothes.
_T_FACE = 240.0
_T_NECK = 234.0
_T_HAIR = 214.0
_T_HAND = 224.0
_T_TORSO = 198.0
_T_LEGS = 186.0
_T_SHOES = 150.0


# --------------------------------------------------------------------------- #
# Sampling
# --------------------------------------------------------------------------- #
def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * rng.random())


def _pick(rng: np.random.Generator, palette, jitter: int = 12) -> RGB:
    v = rng.random(4)
    base = palette[min(int(v[0] * len(palette)), len(palette) - 1)]
    if not jitter:
        return tuple(base)  # type: ignore[return-value]
    span = 2 * jitter + 1
    return tuple(  # type: ignore[return-value]
        min(255, max(0, c + min(int(r * span), span - 1) - jitter)) for c, r in zip(base, v[1:])
    )


def _mix(a, b, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _edge_x(bottom_x: float, vanish_x: float, s: float) -> float:
    """x of a line from the vanishing point to ``bottom_x`` at depth fraction ``s``."""
    return vanish_x + (bottom_x - vanish_x) * s


def _sample_buildings(rng, W, H, horizon, sky_bottom, night, far) -> list[Building]:
    out: list[Building] = []
    x = -_u(rng, 0.0, 0.08) * W
    while x < W:
        bw = W * (_u(rng, 0.10, 0.24) if far else _u(rng, 0.07, 0.19))
        top = horizon - H * (_u(rng, 0.16, 0.36) if far else _u(rng, 0.07, 0.30))
        color = _pick(rng, _BUILDING_COLORS, 14)
        if far:
            color = _mix(color, sky_bottom, 0.55 if not night else 0.3)
        heat = _u(rng, -10.0, 10.0) - (8.0 if far else 0.0)
        bh = horizon - top
        # window grid, sizes relative to the canvas
        scale = 0.8 if far else 1.0
        ww = W * scale * _u(rng, 0.011, 0.02)
        wh = H * scale * _u(rng, 0.018, 0.032)
        gx = ww * _u(rng, 1.6, 2.4)
        gy = wh * _u(rng, 1.5, 2.1)
        cols = int((bw - gx + (gx - ww)) // gx) if bw > 2 * gx else 0
        rows = int((bh - 1.2 * gy) // gy) if bh > 2.2 * gy else 0
        windows: list[Box] = []
        lit: list[bool] = []
        if cols > 0 and rows > 0 and rng.random() < (0.4 if far else 0.92):
            span_x = cols * gx - (gx - ww)
            xs = x + (bw - span_x) / 2.0 + gx * np.arange(cols)
            ys = top + 0.6 * gy + gy * np.arange(rows)
            p_lit = _u(rng, 0.25, 0.6) if night else _u(rng, 0.0, 0.12)
            flags = rng.random(rows * cols) < p_lit
            k = 0
            for yy in ys:
                for xx in xs:
                    windows.append((float(xx), float(yy), float(xx + ww), float(yy + wh)))
                    lit.append(bool(flags[k]))
                    k += 1
        glass = _mix((70, 88, 112), sky_bottom, _u(rng, 0.1, 0.4)) if not night else (22, 24, 30)
        lit_color = _pick(rng, [(255, 222, 150), (255, 236, 196), (240, 246, 255), (255, 200, 120)], 8)
        out.append(Building(
            x0=float(x), x1=float(x + bw), top=float(top), bottom=float(horizon) + 1.0,
            color=color, windows=tuple(windows), lit=tuple(lit), glass_color=glass,
            lit_color=lit_color, heat=heat, far=far,
        ))
        gap = W * _u(rng, 0.0, 0.03) if rng.random() < 0.3 else 0.0
        x += bw + gap
    return out


def _sample_road(rng, W, H, horizon) -> Road:
    vx = W * _u(rng, 0.38, 0.62)
    center = W * _u(rng, 0.38, 0.62)
    half = W * _u(rng, 0.36, 0.55)
    bl, br = center - half, center + half
    sidewalk = W * _u(rng, 0.12, 0.3)
    depth = H - horizon
    gray = int(rng.integers(58, 92))
    color = (gray, gray + int(rng.integers(0, 4)), gray + int(rng.integers(0, 6)))
    mark_color = _pick(rng, [(228, 228, 220), (230, 200, 80)], 8) if rng.random() < 0.2 else _pick(rng, [(226, 226, 220)], 8)
    sw = int(rng.integers(132, 178))
    sidewalk_color = (sw, sw - int(rng.integers(0, 8)), sw - int(rng.integers(2, 14)))
    curb_color = _mix(sidewalk_color, (235, 235, 235), 0.4)

    marks: list[tuple[Point, ...]] = []
    mark_w = (br - bl) * _u(rng, 0.010, 0.016)
    lanes = 2 if rng.random() < 0.6 else 3
    period = _u(rng, 2.0, 2.9)
    dash = period * _u(rng, 0.28, 0.42)
    phase = _u(rng, 0.0, period)
    for j in range(1, lanes):
        bx = bl + (br - bl) * j / lanes
        for k in range(40):
            za = 1.0 + phase - period + k * period
            zb = za + dash
            if zb <= 1.0:
                continue
            za = max(za, 1.0)
            sa, sb = 1.0 / za, 1.0 / zb
            ya, yb = horizon + sa * depth, horizon + sb * depth
            if ya - yb < 0.35:
                break
            xa, xb = _edge_x(bx, vx, sa), _edge_x(bx, vx, sb)
            ha, hb = 0.5 * mark_w * sa, 0.5 * mark_w * sb
            marks.append(((xa - ha, ya), (xa + ha, ya), (xb + hb, yb), (xb - hb, yb)))
    if rng.random() < 0.55:  # solid edge lines
        inset = (br - bl) * 0.03
        for ex, sgn in ((bl + inset, 1.0), (br - inset, -1.0)):
            marks.append(((vx, horizon), (ex, H), (ex + sgn * mark_w, H)))

    crosswalk: list[tuple[Point, ...]] = []
    if rng.random() < 0.35:
        s1 = _u(rng, 0.35, 0.8)
        s2 = s1 * _u(rng, 0.72, 0.82)
        y1, y2 = horizon + s1 * depth, horizon + s2 * depth
        n = int(rng.integers(7, 12))
        for j in range(n):
            a = (j + 0.15) / n
            b = (j + 0.65) / n
            xa, xb = bl + (br - bl) * a, bl + (br - bl) * b
            crosswalk.append((
                (_edge_x(xa, vx, s1), y1), (_edge_x(xb, vx, s1), y1),
                (_edge_x(xb, vx, s2), y2), (_edge_x(xa, vx, s2), y2),
            ))
    return Road(
        vanish_x=float(vx), top_y=float(horizon), bottom_left=float(bl), bottom_right=float(br),
        sidewalk_width=float(sidewalk), color=color, mark_color=mark_color,
        sidewalk_color=sidewalk_color, curb_color=curb_color,
        marks=tuple(marks), crosswalk=tuple(crosswalk),
    )


def sample_scene(seed: int, index: int, width: int = 160, height: int = 128,
                 night_fraction: float = 0.3) -> Scene:
    """Draw the description of frame ``index`` of the stream ``seed``.

    Determined by ``(seed, index)`` (and the size / night fraction) only.
    """
    seed, index, width, height = int(seed), int(index), int(width), int(height)
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be non-negative")
    if width < 16 or height < 16:
        raise ValueError("width and height must be at least 16 pixels")
    if not 0.0 <= float(night_fraction) <= 1.0:
        raise ValueError("night_fraction must be in [0, 1]")
    rng = np.random.default_rng([seed, index])
    # drawn first, so it never depends on how many colour draws follow
    noise_seed = int(rng.integers(0, 2**63 - 1))
    night = bool(rng.random() < night_fraction)
    W, H = float(width), float(height)
    horizon = H * _u(rng, 0.36, 0.47)
    depth = H - horizon

    # sky and illumination
    if night:
        sky_top = (int(rng.integers(2, 10)), int(rng.integers(3, 12)), int(rng.integers(10, 26)))
        glow = rng.random() < 0.5  # orange city glow near the horizon
        sky_bottom = ((int(rng.integers(34, 52)), int(rng.integers(26, 38)), int(rng.integers(22, 34)))
                      if glow else
                      (int(rng.integers(14, 30)), int(rng.integers(16, 30)), int(rng.integers(26, 44))))
        light = _u(rng, 0.13, 0.22)
        tint = (_u(rng, 0.85, 0.95), _u(rng, 0.9, 1.0), _u(rng, 1.05, 1.2))
        shadow_strength = 0.0
        ambient = _u(rng, -12.0, 6.0)
    else:
        overcast = rng.random() < 0.25
        if overcast:
            g = int(rng.integers(150, 196))
            sky_top = (g - int(rng.integers(4, 14)), g - int(rng.integers(0, 8)), g)
            g2 = min(235, g + int(rng.integers(10, 36)))
            sky_bottom = (g2, g2, min(255, g2 + int(rng.integers(0, 8))))
            shadow_strength = _u(rng, 0.1, 0.2)
            light = _u(rng, 0.8, 0.95)
        else:
            sky_top = (int(rng.integers(50, 110)), int(rng.integers(112, 165)), int(rng.integers(188, 238)))
            sky_bottom = (int(rng.integers(170, 215)), int(rng.integers(192, 226)), int(rng.integers(216, 244)))
            shadow_strength = _u(rng, 0.35, 0.55)
            light = _u(rng, 0.92, 1.1)
        tint = (_u(rng, 0.97, 1.04), 1.0, _u(rng, 0.96, 1.04))
        ambient = _u(rng, -8.0, 12.0)
    shadow_dx = _u(rng, -0.6, 0.6)

    far_buildings = _sample_buildings(rng, W, H, horizon, sky_bottom, night, far=True)
    buildings = _sample_buildings(rng, W, H, horizon, sky_bottom, night, far=False)
    road = _sample_road(rng, W, H, horizon)
    verge_grass = bool(rng.random() < 0.5)
    verge_color = (_pick(rng, [(82, 120, 58), (96, 128, 66), (110, 118, 70)], 10) if verge_grass
                   else _pick(rng, [(112, 110, 108), (124, 116, 100), (98, 100, 104)], 10))

    vx, bl, br = road.vanish_x, road.bottom_left, road.bottom_right

    # pedestrians: nearer (lower foot_y) means taller; the camera is at head height
    pedestrians: list[Pedestrian] = []
    n_people = int(rng.choice(6, p=[0.12, 0.22, 0.22, 0.2, 0.14, 0.10]))
    for _ in range(n_people):
        s = 0.16 + 0.78 * rng.random() ** 1.4
        foot_y = horizon + s * depth
        h = s * depth * _u(rng, 0.88, 1.08)
        if rng.random() < 0.15:
            h *= _u(rng, 0.55, 0.72)  # a child
        pedestrians.append(Pedestrian(
            x=W * _u(rng, 0.03, 0.97), foot_y=float(foot_y), height=float(h),
            shirt_color=_pick(rng, _SHIRT_COLORS, 14), pants_color=_pick(rng, _PANTS_COLORS, 10),
            skin_color=_pick(rng, _SKIN_COLORS, 8), hair_color=_pick(rng, _HAIR_COLORS, 8),
            stride=h * _u(rng, -0.1, 0.1), arm_swing=h * _u(rng, -0.06, 0.06),
            heat=_u(rng, -8.0, 8.0),
        ))

    # cars, seen from the side, on the road
    cars: list[Car] = []
    n_cars = int(rng.choice(MAX_CARS + 1, p=[0.25, 0.35, 0.25, 0.15]))
    placed: list[tuple[float, float, float]] = []   # (depth fraction, x0, x1)
    for _ in range(n_cars):
        for _try in range(4):  # avoid two cars side by side at the same depth
            s = _u(rng, 0.22, 0.62)
            ph = s * depth
            length = ph * _u(rng, 2.3, 2.9)
            cx = _edge_x(0.5 * (bl + br), vx, s) + 0.5 * (br - bl) * s * _u(rng, -0.75, 0.75)
            ok = all(abs(s - s2) > 0.1 or cx + length / 2 < a or cx - length / 2 > b
                     for s2, a, b in placed)
            if ok:
                break
        if not ok:
            continue
        placed.append((s, cx - length / 2, cx + length / 2))
        bottom = horizon + s * depth
        ch = ph * _u(rng, 0.72, 0.92)
        cars.append(Car(
            x0=float(cx - length / 2), x1=float(cx + length / 2), bottom=float(bottom),
            height=float(ch), facing=1 if rng.random() < 0.5 else -1,
            body_color=_pick(rng, _CAR_COLORS, 12),
            glass_color=(_pick(rng, [(58, 72, 88), (40, 48, 58)], 8) if not night else (14, 16, 20)),
            engine_heat=_u(rng, 0.75, 1.0), lights_on=bool(night or rng.random() < 0.2),
        ))

    trees: list[Tree] = []
    n_trees = int(rng.choice(4, p=[0.3, 0.3, 0.25, 0.15]))
    for _ in range(n_trees):
        s = _u(rng, 0.12, 0.5)
        base_y = horizon + s * depth
        ph = s * depth
        left = rng.random() < 0.5
        edge = _edge_x(bl if left else br, vx, s)
        off = road.sidewalk_width * s * _u(rng, 0.3, 1.4)
        th = ph * _u(rng, 1.7, 2.6)
        trees.append(Tree(
            x=float(edge - off if left else edge + off), base_y=float(base_y), height=float(th),
            crown_width=float(th * _u(rng, 0.4, 0.62)),
            trunk_color=_pick(rng, _TRUNK_COLORS, 8), crown_color=_pick(rng, _CROWN_COLORS, 12),
        ))

    lamps: list[Lamp] = []
    n_lamps = int(rng.choice(3, p=[0.35, 0.4, 0.25]))
    for _ in range(n_lamps):
        s = _u(rng, 0.12, 0.45)
        base_y = horizon + s * depth
        left = rng.random() < 0.5
        edge = _edge_x(bl if left else br, vx, s)
        off = road.sidewalk_width * s * 0.15
        lamps.append(Lamp(x=float(edge - off if left else edge + off), base_y=float(base_y),
                          height=float(s * depth * _u(rng, 2.6, 3.2)),
                          on=bool(night and rng.random() < 0.9)))

    return Scene(
        index=index, night=night, width=width, height=height, horizon=float(horizon),
        sky_top=sky_top, sky_bottom=sky_bottom, light=light, tint=tint,
        shadow_strength=shadow_strength, shadow_dx=shadow_dx,
        verge_color=verge_color, verge_grass=verge_grass, road=road,
        far_buildings=far_buildings, buildings=buildings, pedestrians=pedestrians,
        cars=cars, trees=trees, lamps=lamps, ambient=ambient, noise_seed=noise_seed,
    )


# --------------------------------------------------------------------------- #
# Primitives: one geometry, three "paints" (rgb colour, thermal level, class id)
# --------------------------------------------------------------------------- #
# A primitive is (kind, xy, rgb or None, thermal or None, label or None, extra).
# kind: "poly" | "rect" | "ellipse" | "rrect" (extra = corner radius).
# None for a paint means "not drawn in that layer".


def _box(x0: float, y0: float, x1: float, y1: float) -> Box:
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


class _Paint:
    """Per-scene helpers turning materials into lit RGB and class temperatures."""

    def __init__(self, scene: Scene):
        self.night = scene.night
        self.k = 1 if scene.night else 0
        m = np.asarray(scene.tint, dtype=np.float64) * scene.light
        self.m = m
        self.amb = scene.ambient

    def lit(self, c: RGB) -> RGB:
        m = self.m
        return (min(255, int(c[0] * m[0])), min(255, int(c[1] * m[1])), min(255, int(c[2] * m[2])))

    def env(self, pair, offset: float = 0.0) -> float:
        return pair[self.k] + self.amb + offset


def _background_prims(scene: Scene, P: _Paint) -> list[tuple]:
    W, H = scene.width, scene.height
    hz = scene.horizon
    prims: list[tuple] = []
    for b in scene.far_buildings + scene.buildings:
        t_fac = P.env(_T_BUILDING, b.heat)
        prims.append(("rect", _box(b.x0, b.top, b.x1, b.bottom), P.lit(b.color), t_fac, BUILDING, None))
        glass = P.lit(b.glass_color)
        for w, on in zip(b.windows, b.lit):
            if on:
                rgb = b.lit_color if scene.night else _mix(P.lit(b.glass_color), b.lit_color, 0.45)
                prims.append(("rect", w, rgb, t_fac + _T_LIT[P.k], WINDOW, None))
            else:
                prims.append(("rect", w, glass, t_fac + _T_GLASS, WINDOW, None))

    r = scene.road
    vx, bl, br = r.vanish_x, r.bottom_left, r.bottom_right
    # ground: sidewalk everywhere below the horizon, verges beyond the sidewalks
    t_side = P.env(_T_SIDEWALK)
    prims.append(("rect", _box(0, hz, W, H), P.lit(r.sidewalk_color), t_side, GROUND, None))
    t_verge = P.env(_T_GRASS) if scene.verge_grass else P.env(_T_SIDEWALK, -6.0)
    far_l, far_r = bl - r.sidewalk_width, br + r.sidewalk_width
    big = 4.0 * W
    prims.append(("poly", ((-big, hz), (vx, hz), (far_l, H), (-big, H)), P.lit(scene.verge_color), t_verge, GROUND, None))
    prims.append(("poly", ((vx, hz), (big, hz), (big, H), (far_r, H)), P.lit(scene.verge_color), t_verge, GROUND, None))
    # curbs: thin wedges along the road edges
    cw = max(1.0, 0.02 * (br - bl))
    curb = P.lit(r.curb_color)
    prims.append(("poly", ((vx, hz), (bl - cw, H), (bl, H)), curb, t_side + 4.0, GROUND, None))
    prims.append(("poly", ((vx, hz), (br, H), (br + cw, H)), curb, t_side + 4.0, GROUND, None))
    # road
    prims.append(("poly", ((vx - 0.5, hz), (vx + 0.5, hz), (br, H), (bl, H)), P.lit(r.color), P.env(_T_ROAD), ROAD, None))
    mark_rgb, t_mark = P.lit(r.mark_color), P.env(_T_MARK)
    for poly in r.marks:
        prims.append(("poly", poly, mark_rgb, t_mark, LANE_MARK, None))
    for poly in r.crosswalk:
        prims.append(("poly", poly, mark_rgb, t_mark, LANE_MARK, None))
    return prims


def _pedestrian_prims(p: Pedestrian, P: _Paint) -> list[tuple]:
    u, x, fy = p.height, p.x, p.foot_y
    top = fy - u
    hip = top + 0.5 * u
    sh = top + 0.15 * u
    ht = p.heat
    shirt, pants, skin = P.lit(p.shirt_color), P.lit(p.pants_color), P.lit(p.skin_color)
    prims: list[tuple] = []
    # legs (hip -> foot quads) and shoes
    for hx, fx in ((x - 0.045 * u, x - p.stride), (x + 0.045 * u, x + p.stride)):
        prims.append(("poly", ((hx - 0.05 * u, hip), (hx + 0.05 * u, hip), (fx + 0.036 * u, fy - 0.03 * u),
                               (fx - 0.036 * u, fy - 0.03 * u)), pants, _T_LEGS + ht, PEDESTRIAN, None))
        prims.append(("rect", _box(fx - 0.04 * u, fy - 0.035 * u, fx + 0.05 * u, fy), P.lit(_SHOE),
                      _T_SHOES, PEDESTRIAN, None))
    # arms (sleeves) and hands
    hands = []
    for sgn, swing in ((-1.0, p.arm_swing), (1.0, -p.arm_swing)):
        sx = x + sgn * 0.105 * u
        hx, hy = x + sgn * 0.13 * u + swing, top + 0.48 * u
        prims.append(("poly", ((sx - 0.035 * u, sh + 0.01 * u), (sx + 0.035 * u, sh + 0.01 * u),
                               (hx + 0.03 * u, hy), (hx - 0.03 * u, hy)), shirt, _T_TORSO + ht - 2.0, PEDESTRIAN, None))
        hands.append(hx)
    # torso
    prims.append(("poly", ((x - 0.12 * u, sh), (x + 0.12 * u, sh), (x + 0.10 * u, hip + 0.02 * u),
                           (x - 0.10 * u, hip + 0.02 * u)), shirt, _T_TORSO + ht, PEDESTRIAN, None))
    for hx in hands:
        r = 0.028 * u
        prims.append(("ellipse", _box(hx - r, top + 0.48 * u - r, hx + r, top + 0.48 * u + r), skin,
                      _T_HAND + ht, PEDESTRIAN, None))
    # neck, hair, face
    prims.append(("rect", _box(x - 0.03 * u, top + 0.11 * u, x + 0.03 * u, sh + 0.005 * u), skin, _T_NECK + ht, PEDESTRIAN, None))
    rx, ry = 0.056 * u, 0.068 * u
    prims.append(("ellipse", _box(x - rx, top, x + rx, top + 2 * ry), P.lit(p.hair_color), _T_HAIR + ht, PEDESTRIAN, None))
    prims.append(("ellipse", _box(x - 0.9 * rx, top + 0.42 * ry, x + 0.9 * rx, top + 2 * ry), skin, _T_FACE + ht, PEDESTRIAN, None))
    return prims


def _car_prims(c: Car, P: _Paint, night: bool) -> list[tuple]:
    L, h, b = c.x1 - c.x0, c.height, c.bottom
    x0, x1 = c.x0, c.x1

    def X(f: float) -> float:  # fraction of length measured from the rear
        return x0 + f * L if c.facing > 0 else x1 - f * L

    body = P.lit(c.body_color)
    t_body = P.env(_T_CAR_BODY)
    prims: list[tuple] = []
    # cabin and its windows
    prims.append(("poly", ((X(0.10), b - 0.58 * h), (X(0.22), b - h), (X(0.62), b - h), (X(0.82), b - 0.58 * h)),
                   body, t_body, CAR, None))
    glass, t_glass = P.lit(c.glass_color), P.env(_T_CAR_GLASS)
    prims.append(("poly", ((X(0.15), b - 0.6 * h), (X(0.245), b - 0.93 * h), (X(0.44), b - 0.93 * h), (X(0.44), b - 0.6 * h)),
                   glass, t_glass, CAR, None))
    prims.append(("poly", ((X(0.475), b - 0.6 * h), (X(0.475), b - 0.93 * h), (X(0.60), b - 0.93 * h), (X(0.76), b - 0.6 * h)),
                   glass, t_glass, CAR, None))
    # lower body
    radius = max(0.0, 0.12 * h)
    prims.append(("rrect", _box(x0, b - 0.62 * h, x1, b - 0.14 * h), body, t_body, CAR, radius))
    # engine bay: hot in thermal only (front 28% of the lower body)
    prims.append(("rect", _box(X(0.72), b - 0.58 * h, X(0.98), b - 0.18 * h), None,
                  t_body + (_T_ENGINE - t_body) * c.engine_heat, None, None))
    # exhaust (rear, low): warm spot, thermal only
    prims.append(("rect", _box(X(0.0), b - 0.22 * h, X(0.06), b - 0.14 * h), None, 170.0, None, None))
    # lights
    if c.lights_on:
        head_rgb = (255, 250, 226) if night else (236, 236, 220)
        tail_rgb = (255, 46, 36) if night else (200, 40, 36)
    else:
        head_rgb = P.lit((214, 214, 204))
        tail_rgb = P.lit((150, 30, 30))
    prims.append(("rect", _box(X(0.955), b - 0.52 * h, X(1.0), b - 0.42 * h), head_rgb, _T_HEADLIGHT, CAR, None))
    prims.append(("rect", _box(X(0.0), b - 0.54 * h, X(0.03), b - 0.42 * h), tail_rgb, t_body + 12.0, CAR, None))
    # wheels
    r = 0.19 * h
    for f in (0.2, 0.8):
        cx, cy = X(f), b - r
        prims.append(("ellipse", _box(cx - r, cy - r, cx + r, cy + r), P.lit(_TYRE), _T_TYRE, CAR, None))
        r2 = 0.5 * r
        prims.append(("ellipse", _box(cx - r2, cy - r2, cx + r2, cy + r2), P.lit(_HUB), _T_HUB, CAR, None))
    return prims


def _tree_prims(t: Tree, P: _Paint) -> list[tuple]:
    th, x, by = t.height, t.x, t.base_y
    tw = max(1.0, 0.05 * th)
    crown_h = 0.55 * th
    cw = t.crown_width
    return [
        ("rect", _box(x - tw / 2, by - 0.55 * th, x + tw / 2, by), P.lit(t.trunk_color), P.env(_T_TRUNK), TREE, None),
        ("ellipse", _box(x - cw / 2, by - th, x + cw / 2, by - th + crown_h), P.lit(t.crown_color), P.env(_T_CROWN), TREE, None),
        ("ellipse", _box(x - cw * 0.3, by - th + 0.05 * crown_h, x + cw * 0.22, by - th + 0.55 * crown_h),
         P.lit(_mix(t.crown_color, (160, 200, 90), 0.25)), P.env(_T_CROWN, 3.0), TREE, None),
    ]


def _lamp_prims(l: Lamp, P: _Paint) -> list[tuple]:
    x, by, h = l.x, l.base_y, l.height
    pw = max(1.0, 0.018 * h)
    hw, hh = 0.07 * h, 0.035 * h
    head_rgb = (255, 240, 200) if l.on else P.lit((150, 150, 140))
    t_head = _T_LAMP_ON + P.amb * 0.3 if l.on else P.env(_T_POLE)
    return [
        ("rect", _box(x - pw / 2, by - h, x + pw / 2, by), P.lit(_POLE), P.env(_T_POLE), LAMP, None),
        ("ellipse", _box(x - hw, by - h - hh, x + hw, by - h + hh), head_rgb, t_head, LAMP, None),
    ]


def _foreground_prims(scene: Scene, P: _Paint) -> list[tuple]:
    items: list[tuple[float, int, int, object]] = []
    for i, t in enumerate(scene.trees):
        items.append((t.base_y, 0, i, t))
    for i, l in enumerate(scene.lamps):
        items.append((l.base_y, 1, i, l))
    for i, c in enumerate(scene.cars):
        items.append((c.bottom, 2, i, c))
    for i, p in enumerate(scene.pedestrians):
        items.append((p.foot_y, 3, i, p))
    items.sort(key=lambda it: (it[0], it[1], it[2]))  # far (high in frame) first
    prims: list[tuple] = []
    for _, kind, _, obj in items:
        if kind == 0:
            prims.extend(_tree_prims(obj, P))  # type: ignore[arg-type]
        elif kind == 1:
            prims.extend(_lamp_prims(obj, P))  # type: ignore[arg-type]
        elif kind == 2:
            prims.extend(_car_prims(obj, P, scene.night))  # type: ignore[arg-type]
        else:
            prims.extend(_pedestrian_prims(obj, P))  # type: ignore[arg-type]
    return prims


def _shade_prims(scene: Scene) -> list[tuple]:
    """Ground-level shadow (day) or light pools (night) shapes: (kind, xy, intensity 0..255)."""
    out: list[tuple] = []
    if scene.night:
        for c in scene.cars:
            if not c.lights_on:
                continue
            L, h, b = c.x1 - c.x0, c.height, c.bottom
            xf = c.x1 if c.facing > 0 else c.x0
            f = float(c.facing)
            out.append(("poly", ((xf, b - 0.3 * h), (xf + f * 1.6 * L, b - 0.28 * h),
                                 (xf + f * 1.6 * L, b + 0.2 * h), (xf, b)), 110))
        for l in scene.lamps:
            if l.on:
                rx, ry = 0.45 * l.height, 0.09 * l.height
                out.append(("ellipse", _box(l.x - rx, l.base_y - ry, l.x + rx, l.base_y + ry), 120))
    else:
        dx = scene.shadow_dx
        for p in scene.pedestrians:
            u = p.height
            cx = p.x + dx * 0.25 * u
            out.append(("ellipse", _box(cx - 0.2 * u, p.foot_y - 0.035 * u, cx + 0.2 * u, p.foot_y + 0.035 * u), 255))
        for c in scene.cars:
            h = c.height
            off = dx * 0.3 * h
            out.append(("ellipse", _box(c.x0 + off, c.bottom - 0.1 * h, c.x1 + off, c.bottom + 0.12 * h), 255))
        for t in scene.trees:
            w = t.crown_width * 0.6
            cx = t.x + dx * 0.4 * t.height
            out.append(("ellipse", _box(cx - w, t.base_y - 0.06 * t.height, cx + w, t.base_y + 0.05 * t.height), 200))
    return out


def _draw(draw: ImageDraw.ImageDraw, kind: str, xy, fill, extra) -> None:
    if kind == "poly":
        draw.polygon(xy, fill=fill)
    elif kind == "rect":
        draw.rectangle(xy, fill=fill)
    elif kind == "ellipse":
        draw.ellipse(xy, fill=fill)
    elif kind == "rrect":
        rad = min(float(extra or 0.0), 0.5 * (xy[2] - xy[0]), 0.5 * (xy[3] - xy[1]))
        if rad >= 1.0:
            draw.rounded_rectangle(xy, radius=rad, fill=fill)
        else:
            draw.rectangle(xy, fill=fill)
    else:  # pragma: no cover - internal
        raise ValueError(kind)


def _sky_rows(scene: Scene) -> np.ndarray:
    """Row weights 0 (top) .. 1 (horizon) for the sky gradient, shape (H,)."""
    t = np.arange(scene.height, dtype=np.float32) / max(scene.horizon, 1.0)
    return np.clip(t, 0.0, 1.0) ** 0.8


@lru_cache(maxsize=16)
def _vignette(width: int, height: int) -> np.ndarray:
    yy = (np.arange(height, dtype=np.float32) - (height - 1) / 2.0) / ((height - 1) / 2.0)
    xx = (np.arange(width, dtype=np.float32) - (width - 1) / 2.0) / ((width - 1) / 2.0)
    r2 = (xx[None, :] ** 2 + yy[:, None] ** 2) / 2.0   # 0 at centre, 1 in the corners
    v = (1.0 - 0.2 * r2).astype(np.float32)
    v.setflags(write=False)
    return v


def _scale(scene: Scene) -> float:
    return min(scene.width / 160.0, scene.height / 128.0)


def render_rgb(scene: Scene) -> np.ndarray:
    """Visible-light image of ``scene``: (H, W, 3) uint8."""
    P = _Paint(scene)
    return _rgb(scene, P, _background_prims(scene, P), _foreground_prims(scene, P))


def _rgb(scene: Scene, P: _Paint, bg: list, fg: list) -> np.ndarray:
    W, H = scene.width, scene.height
    t = _sky_rows(scene)[:, None]
    top = np.asarray(scene.sky_top, np.float32)
    bot = np.asarray(scene.sky_bottom, np.float32)
    sky = (top[None, :] + (bot - top)[None, :] * t).astype(np.uint8)      # (H, 3)
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(sky[:, None, :], (H, W, 3))))
    draw = ImageDraw.Draw(img)
    for kind, xy, rgb, _t, _l, extra in bg:
        if rgb is not None:
            _draw(draw, kind, xy, rgb, extra)

    shade = _shade_prims(scene)
    if shade and (scene.night or scene.shadow_strength > 0):
        layer = Image.new("L", (W, H), 0)
        ld = ImageDraw.Draw(layer)
        for kind, xy, val in shade:
            _draw(ld, kind, xy, int(val), None)
        layer = layer.filter(ImageFilter.GaussianBlur(max(0.6, 1.5 * _scale(scene))))
        m = np.asarray(layer, dtype=np.float32)[..., None] / 255.0
        arr = np.asarray(img, dtype=np.float32)
        if scene.night:
            arr = arr + m * np.array([235.0, 205.0, 150.0], np.float32) * 0.75
        else:
            arr = arr * (1.0 - scene.shadow_strength * m)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)

    for kind, xy, rgb, _t, _l, extra in fg:
        if rgb is not None:
            _draw(draw, kind, xy, rgb, extra)
    return np.asarray(img, dtype=np.uint8)


def _thermal_clean(scene: Scene, P: _Paint, bg: list, fg: list) -> Image.Image:
    W, H = scene.width, scene.height
    k = P.k
    t = _sky_rows(scene)
    sky = _T_SKY_TOP[k] + (_T_SKY_HORIZON[k] - _T_SKY_TOP[k]) * t + 0.4 * scene.ambient
    sky = np.clip(np.round(sky), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(sky[:, None], (H, W))))
    draw = ImageDraw.Draw(img)
    for prims in (bg, fg):
        for kind, xy, _rgb, temp, _l, extra in prims:
            if temp is not None:
                _draw(draw, kind, xy, int(min(255.0, max(0.0, round(temp)))), extra)
    return img


def render_thermal(scene: Scene) -> np.ndarray:
    """Single-channel LWIR image of ``scene``: (H, W) uint8.

    Grey levels come from object classes (and ``scene.ambient``), never from the
    RGB colours; then optical blur, sensor noise seeded by ``scene.noise_seed``
    (white noise plus column fixed-pattern noise) and vignetting.
    """
    P = _Paint(scene)
    return _thermal(scene, P, _background_prims(scene, P), _foreground_prims(scene, P))


def _thermal(scene: Scene, P: _Paint, bg: list, fg: list) -> np.ndarray:
    W, H = scene.width, scene.height
    img = _thermal_clean(scene, P, bg, fg)
    img = img.filter(ImageFilter.GaussianBlur(max(0.5, 1.1 * _scale(scene))))
    arr = np.asarray(img, dtype=np.float32)
    rng = np.random.default_rng(scene.noise_seed)
    noise = rng.standard_normal((H, W), dtype=np.float32) * 2.5
    columns = rng.standard_normal((1, W), dtype=np.float32) * 1.5
    arr = arr * _vignette(W, H) + noise + columns
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _render_pair(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """RGB and thermal of one scene, building the primitives once (same as the two calls)."""
    P = _Paint(scene)
    bg, fg = _background_prims(scene, P), _foreground_prims(scene, P)
    return _rgb(scene, P, bg, fg), _thermal(scene, P, bg, fg)


def render_labels(scene: Scene) -> np.ndarray:
    """Per-pixel class ids (see :data:`CLASS_NAMES`) from the same geometry: (H, W) uint8."""
    P = _Paint(scene)
    img = Image.new("L", (scene.width, scene.height), SKY)
    draw = ImageDraw.Draw(img)
    for prims in (_background_prims(scene, P), _foreground_prims(scene, P)):
        for kind, xy, _rgb, _t, label, extra in prims:
            if label is not None:
                _draw(draw, kind, xy, int(label), extra)
    return np.asarray(img, dtype=np.uint8)


# --------------------------------------------------------------------------- #
# Batches and files
# --------------------------------------------------------------------------- #
def frame_id(index: int) -> str:
    """Stable file stem of a frame: ``frame_id(17) == "scene_000017"``."""
    index = int(index)
    if index < 0:
        raise ValueError("index must be non-negative")
    return f"scene_{index:06d}"


def _tags(scene: Scene) -> dict:
    return {"id": frame_id(scene.index), "index": scene.index, "night": bool(scene.night),
            "n_people": len(scene.pedestrians), "n_cars": len(scene.cars)}


def frame_content(seed: int, index: int, width: int = 160, height: int = 128,
                  night_fraction: float = 0.3) -> dict:
    """What frame ``index`` of stream ``seed`` shows, without rendering it: the tags of
    :func:`render_frames` (``{"id", "index", "night", "n_people", "n_cars"}``). It depends on the
    canvas (width, height) and the night fraction like the frame itself, never on the size a study
    later fits it to."""
    return _tags(sample_scene(seed, index, width, height, night_fraction))


def render_frames(seed: int, indices: Iterable[int], width: int = 160, height: int = 128,
                  night_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Render frames ``indices`` of stream ``seed``.

    Returns rgb (N, H, W, 3) uint8, thermal (N, H, W) uint8 and one tag dict per
    frame: ``{"id", "index", "night", "n_people", "n_cars"}``.
    """
    idx = [int(i) for i in indices]
    n = len(idx)
    rgb = np.empty((n, int(height), int(width), 3), dtype=np.uint8)
    thermal = np.empty((n, int(height), int(width)), dtype=np.uint8)
    tags: list[dict] = []
    for j, i in enumerate(idx):
        scene = sample_scene(seed, i, width, height, night_fraction)
        rgb[j], thermal[j] = _render_pair(scene)
        tags.append(_tags(scene))
    return rgb, thermal, tags


def write_paired_folder(out_dir, n: int, seed: int = 0, width: int = 160, height: int = 128,
                        night_fraction: float = 0.3) -> None:
    """Write frames 0..n-1 as ``rgb/<id>.png`` (RGB), ``thermal/<id>.png`` (mode L)
    and ``tags.csv`` (columns id,night,n_people,n_cars; night is 0 or 1)."""
    out = Path(out_dir)
    (out / "rgb").mkdir(parents=True, exist_ok=True)
    (out / "thermal").mkdir(parents=True, exist_ok=True)
    with open(out / "tags.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "night", "n_people", "n_cars"])
        for i in range(int(n)):
            scene = sample_scene(seed, i, width, height, night_fraction)
            fid = frame_id(i)
            rgb, thermal = _render_pair(scene)
            Image.fromarray(rgb).save(out / "rgb" / f"{fid}.png")
            Image.fromarray(thermal).save(out / "thermal" / f"{fid}.png")
            writer.writerow([fid, int(scene.night), len(scene.pedestrians), len(scene.cars)])
