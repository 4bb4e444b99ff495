"""Data sources: where real frames come from. One explicit registry; each source yields paired frames.

A source is opened from `config.data` and answers `ids()` (every frame it holds, in a stable order)
and `load(ids, size, resize)` -> `Frames` with RGB (N, 3, S, S) and thermal (N, 1, S, S) uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genaug.config import DataConfig
from genaug.data import scenes
from genaug.data.images import fit_square, to_tensor


@dataclass
class Frames:
    ids: list[str]
    rgb: torch.Tensor  # (N, 3, S, S) uint8
    thermal: torch.Tensor  # (N, 1, S, S) uint8
    night: list[bool]

    def modality(self, name: str) -> torch.Tensor:
        return {"rgb": self.rgb, "thermal": self.thermal}[name]


class ScenesSource:
    """The built-in procedural street scenes, rendered on demand (deterministic per seed and index)."""

    def __init__(self, data: DataConfig, seed: int):
        self.cfg = data.scenes
        self.seed = seed

    def ids(self) -> list[str]:
        return [scenes.frame_id(i) for i in range(self.cfg.n_frames)]

    def load(self, ids: list[str], size: int, resize: str) -> Frames:
        indices = [int(name.rsplit("_", 1)[1]) for name in ids]
        rgb, thermal, tags = scenes.render_frames(
            self.seed, indices, self.cfg.width, self.cfg.height, self.cfg.night_fraction
        )
        rgb = np.stack([fit_square(image, size, resize) for image in rgb])
        thermal = np.stack([fit_square(image, size, resize) for image in thermal])
        return Frames(list(ids), to_tensor(rgb), to_tensor(thermal), [t["night"] for t in tags])


SOURCES = {"scenes": ScenesSource}


def open_source(data: DataConfig, seed: int):
    return SOURCES[data.source](data, seed)
