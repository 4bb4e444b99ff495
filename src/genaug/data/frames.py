"""The types every data source speaks: frame references (paths, no pixels), scans, decoded frames.

`Frames.rgb` is (N, 3, S, S) and `Frames.thermal` (N, C, S, S) uint8 with C = data.thermal_channels;
a modality the source does not have is None. `Frames.labels` holds, per probe task, one class index
per frame (in frame order), `Frames.label_names` each task's class names (index = class); both are
empty when the source has no labels or `probe.tasks = []` (see genaug.data.labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genaug.config import DataConfig
from genaug.data.images import fit_square, read_rgb, read_thermal, to_tensor
from genaug.errors import UserError

MODALITIES = ("rgb", "thermal")
PERSON_NAMES = ["no person", "person"]  # the person-present task's classes, index = class (scenes, KAIST)


@dataclass(frozen=True)
class FrameRef:
    """One frame of a source: an id unique within it, and where each modality's image lies."""

    id: str  # e.g. "set00/V000/I00123" (KAIST), a file stem (folders), "scene_000017" (scenes)
    rgb: Path | None = None
    thermal: Path | None = None
    night: bool | None = None  # None: the source does not know
    group: str = ""  # e.g. "set00/V000": what `genaug data inspect` counts by


@dataclass
class Scan:
    """What a source holds after selection."""

    frames: list[FrameRef]  # pool and MAE sets are drawn from these (the test set too, unless below)
    test_frames: list[FrameRef] | None = None  # a source-defined test set (e.g. KAIST test-all-20)
    modalities: tuple[str, ...] = MODALITIES
    skipped_missing: list[str] = field(default_factory=list)  # ids left out for a missing partner
    notes: list[str] = field(default_factory=list)  # facts for the manifest, e.g. how 16-bit was scaled


@dataclass
class Frames:
    ids: list[str]
    rgb: torch.Tensor | None  # (N, 3, S, S) uint8
    thermal: torch.Tensor | None  # (N, C, S, S) uint8
    night: list[bool | None]
    labels: dict[str, list[int]] = field(default_factory=dict)  # task -> class index per frame, in frame order
    label_names: dict[str, list[str]] = field(default_factory=dict)  # task -> class names, index = class

    def modality(self, name: str) -> torch.Tensor:
        images = {"rgb": self.rgb, "thermal": self.thermal}[name]
        if images is None:
            raise UserError(f"the data source has no {name} images; remove '{name}' from study.modalities")
        return images


def check_unique(frames: list[FrameRef], where: str) -> None:
    seen: set[str] = set()
    for frame in frames:
        if frame.id in seen:
            raise UserError(f"{where}: frame id '{frame.id}' appears twice; ids must be unique (rename one)")
        seen.add(frame.id)


def load_files(refs: list[FrameRef], data: DataConfig, modalities: tuple[str, ...],
               thermal_16bit: str = "full") -> Frames:
    """Decode image files into a fitted uint8 set; a corrupt or truncated file is a UserError naming it."""
    rgb = thermal = None
    if "rgb" in modalities:
        rgb = to_tensor(np.stack([_fit(read_rgb(ref.rgb), ref.rgb, data) for ref in refs]))
    if "thermal" in modalities:
        arrays = [_fit(read_thermal(ref.thermal, thermal_16bit)[0], ref.thermal, data) for ref in refs]
        thermal = with_channels(to_tensor(np.stack(arrays)), data.thermal_channels)
    return Frames([ref.id for ref in refs], rgb, thermal, [ref.night for ref in refs])


def _fit(image: np.ndarray, path: Path, data: DataConfig) -> np.ndarray:
    """fit_square, refusing to upscale: an image smaller than data.image_size is a UserError naming it."""
    h, w = image.shape[:2]
    side = max(w, h) if data.resize == "pad" else min(w, h)  # the side the policy scales to image_size
    if side < data.image_size:
        raise UserError(f"{path}: {w}x{h} is smaller than data.image_size = {data.image_size} (data.resize = "
                        f"'{data.resize}' would upscale its {side}-pixel side); lower data.image_size to at most "
                        f"{side} or remove the image")
    return fit_square(image, data.image_size, data.resize)


def with_channels(thermal: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, 1, S, S) -> (N, channels, S, S): 3 repeats the channel, as 3-channel pretrained models need."""
    return thermal.expand(-1, channels, -1, -1).contiguous() if channels != thermal.shape[1] else thermal
