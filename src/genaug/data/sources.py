"""Data sources: where real frames come from. One explicit registry, one protocol.

A source is opened from `config.data` (and the study seed) and answers:
    scan() -> Scan         which frames it holds after the config's selection (paths only, no pixels)
    load(refs) -> Frames   those frames decoded, fitted to the study's square size, as uint8 tensors
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genaug.config import DataConfig
from genaug.data import scenes
from genaug.data.folder import FolderSource
from genaug.data.kaist import KaistSource
from genaug.data.frames import PERSON_NAMES, FrameRef, Frames, Scan, with_channels
from genaug.data.images import fit_square, to_tensor


class ScenesSource:
    """The built-in procedural street scenes, rendered on demand (deterministic per seed and index)."""

    def __init__(self, data: DataConfig, seed: int):
        self.data = data
        self.seed = seed

    def scan(self) -> Scan:
        frames = [FrameRef(scenes.frame_id(i)) for i in range(self.data.scenes.n_frames)]
        return Scan(frames, notes=[f"scenes seed {self.seed}, {self.data.scenes.width}x{self.data.scenes.height}"])

    def load(self, refs: list[FrameRef]) -> Frames:
        cfg, size, resize = self.data.scenes, self.data.image_size, self.data.resize
        indices = [int(ref.id.rsplit("_", 1)[1]) for ref in refs]
        rgb, thermal, tags = scenes.render_frames(self.seed, indices, cfg.width, cfg.height, cfg.night_fraction)
        rgb = np.stack([fit_square(image, size, resize) for image in rgb])
        thermal = np.stack([fit_square(image, size, resize) for image in thermal])
        return Frames([ref.id for ref in refs], to_tensor(rgb), with_channels(to_tensor(thermal), self.data.thermal_channels),
                      [t["night"] for t in tags])

    def label_files(self, refs: list[FrameRef]) -> list[Path]:
        return []  # rendered, not read: the seed is the content

    def labels(self, refs: list[FrameRef], tasks: list[str], probe) -> dict[str, tuple[list[int], list[str]]]:
        """person (>= 1 pedestrian), car (>= 1 car), cars (the count), night, from each frame's content (never
        its pixels): the same for the same seed and frame, whatever data.image_size."""
        cfg = self.data.scenes
        content = [scenes.frame_content(self.seed, int(ref.id.rsplit("_", 1)[1]), cfg.width, cfg.height,
                                        cfg.night_fraction) for ref in refs]
        tables = {
            "person": ([int(c["n_people"] > 0) for c in content], list(PERSON_NAMES)),
            "car": ([int(c["n_cars"] > 0) for c in content], ["no car", "car"]),
            "cars": ([c["n_cars"] for c in content], [str(n) for n in range(scenes.MAX_CARS + 1)]),
            "night": ([int(c["night"]) for c in content], ["day", "night"]),
        }
        return {task: tables[task] for task in tasks}


SOURCES = {"scenes": ScenesSource, "kaist": KaistSource, "folder": FolderSource}


def open_source(data: DataConfig, seed: int):
    return SOURCES[data.source](data, seed)
