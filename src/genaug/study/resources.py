"""What a stage will need before it starts: disk space (refused with the numbers when short) and, when
CUDA runs out of memory anyway, which batch size to lower."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from genaug.config import Config
from genaug.errors import UserError

MB = 1 << 20
HEADROOM = 64 * MB  # logs, manifests, figures, and what the estimate leaves out

# the config keys whose batch sizes decide a stage's memory
BATCH_KEYS = {
    "mae": ["mae.batch_size"], "ddpm": ["ddpm.batch_size", "ddpm.sample_batch_size"],
    "cyclegan": ["cyclegan.batch_size"], "pix2pix": ["pix2pix.batch_size"],
    "vit_translator": ["vit_translator.batch_size"], "chain": ["ddpm.sample_batch_size"], "eval": ["eval.batch_size"],
}


_counted: dict[tuple, int] = {}


def parameter_count(cfg: Config, stage: str, channels: int) -> int:
    """Parameters of the networks a stage trains, counted on the meta device (nothing allocated); counted
    once per architecture, since a study has many runs of each."""
    section = getattr(cfg, stage, None)
    key = (stage, channels, cfg.data.image_size, section.model_dump_json() if section is not None else "")
    if key not in _counted:
        _counted[key] = _count(cfg, stage, channels)
    return _counted[key]


def _count(cfg: Config, stage: str, channels: int) -> int:
    size = cfg.data.image_size
    with torch.device("meta"):
        if stage == "mae":
            from genaug import mae

            if cfg.mae.init != mae.SCRATCH:  # pretrained: what its weights file holds
                weights = sorted(Path(mae.locate(cfg.mae.init)).glob("*.safetensors"))
                return sum(p.stat().st_size for p in weights) // 4
            nets = [mae.build(cfg.mae, size, channels)]
        elif stage == "ddpm":
            from genaug.generators import ddpm

            nets = [ddpm.build_unet(cfg.ddpm, cfg.ddpm.image_size or size, channels)]
        elif stage in ("cyclegan", "pix2pix"):
            from importlib import import_module

            nets = list(import_module(f"genaug.generators.{stage}").build(getattr(cfg, stage), 3, channels).values())
        else:
            return 0
    return sum(p.numel() for net in nets for p in net.parameters())


def disk_need(cfg: Config, stage: str, params: dict, images: int) -> int:
    """Bytes a stage will write, roughly: its weights (fp32) once for the saved model (twice for the
    DDPM: EMA and raw) plus its checkpoints (weights, optimiser moments and EMA: 4x the weights, times
    runtime.checkpoints_total_limit), its images as PNG (at most raw size), and headroom."""
    channels = 1 if params.get("modality") == "thermal" and cfg.data.thermal_channels == 1 else 3
    weights = 4 * parameter_count(cfg, stage, channels)
    saved = weights * (2 if stage == "ddpm" else 1)
    checkpoints = 4 * weights * cfg.runtime.checkpoints_total_limit if cfg.runtime.checkpoint_every else 0
    pixels = images * 3 * cfg.data.image_size**2
    return saved + checkpoints + pixels + HEADROOM


def check_disk(root: Path, label: str, need: int) -> None:
    free = shutil.disk_usage(root).free
    if free < need:
        raise UserError(f"disk short for {label}: it needs about {need / MB:.0f} MB and {root} has {free / MB:.0f} MB "
                        "free; free some space or give --out a run directory on a larger disk")


def out_of_memory(cfg: Config, label: str, stage: str) -> UserError:
    """The one-line answer to a CUDA out-of-memory error in a stage: the batch size that failed."""
    settings = []
    for key in BATCH_KEYS.get(stage, []):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        settings.append(f"{key} = {value}" + (f" (--set {key}={max(1, value // 2)})" if value else " (auto)"))
    which = " or ".join(settings) or "the stage's batch size"
    return UserError(f"{label}: CUDA ran out of memory at {which}; lower it or use a larger GPU "
                     "(completed stages are kept)")
