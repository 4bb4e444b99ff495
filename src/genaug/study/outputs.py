"""Reading what stages wrote: the one place that knows their files, for later stages and the report.

    split/<name>-<key>/   frames.safetensors (uint8 pool/train/test sets), split.json (ids, day/night,
                          the probe's labels per set and task, and each task's class names)
    <generator>/...       images/*.png listed in manifest.json["images"]: the synthetic set
    eval/<name>-<key>/    per_image.csv: image_id, night, masked_mse, psnr
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from genaug.data.frames import Frames
from genaug.data.images import read_png_folder
from genaug.data.selection import SETS
from genaug.errors import UserError
from genaug.study.store import MANIFEST


def load_split(folder: Path) -> dict[str, Frames]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(folder / "frames.safetensors")
        meta = json.loads((folder / "split.json").read_text())
    except (OSError, ValueError, SafetensorError) as e:
        raise UserError(f"{folder}: unreadable frames.safetensors or split.json ({e.__class__.__name__}); delete "
                        "the folder and run again to rebuild it") from None
    labels, names = meta.get("labels", {}), meta.get("label_names", {})  # absent in splits written before labels
    return {
        name: Frames(meta["ids"][name], tensors.get(f"{name}.rgb"), tensors.get(f"{name}.thermal"), meta["night"][name],
                     dict(labels.get(name, {})), dict(names))
        for name in SETS
    }


def load_synthetic(folder: Path) -> torch.Tensor:
    manifest = json.loads((folder / MANIFEST).read_text())
    return read_png_folder(folder / "images", manifest["images"])


def read_per_image(folder: Path) -> dict[str, np.ndarray]:
    with open(folder / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    return {
        "image_id": np.array([r["image_id"] for r in rows]),
        "night": [None if r["night"] == "" else bool(int(r["night"])) for r in rows],  # None: source doesn't say
        "masked_mse": np.array([float(r["masked_mse"]) for r in rows]),
        "psnr": np.array([float(r["psnr"]) for r in rows]),
    }
