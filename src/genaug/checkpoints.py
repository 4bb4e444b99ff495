"""Training checkpoints: where a stage's training stands, on disk, without pickling.

A checkpoint is a folder `checkpoint-<step>/` holding `tensors.safetensors` (every tensor of the
state) and `state.json` (everything else, with each tensor's key in its place); it is written under
a temporary name and renamed, so a half-written one is never read. Nothing is pickled.

`Trainer.fit` (genaug/engine.py) decides when to save and what to restore; this module owns the format:
`Checkpoints` names, lists, writes (atomically, keeping at most `total_limit`) and reads the folders,
and `GlobalRNG` makes torch's global generators part of the saved state.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from genaug import faults
from genaug.errors import UserError


class GlobalRNG:
    """torch's global CPU (and CUDA) generators, as checkpointable state: kornia's augmentations and
    dropout draw from them."""

    def state_dict(self) -> dict:
        out = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda"] = torch.cuda.get_rng_state()
        return out

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


class Checkpoints:
    """`folder/checkpoint-<step>/`, every `every` steps and at the last step, at most `total_limit` kept."""

    PREFIX = "checkpoint-"

    def __init__(self, folder: Path | None, every: int, total_limit: int):
        self.folder, self.every, self.total_limit = folder, every, total_limit

    def due(self, step: int, last: int) -> bool:
        return self.folder is not None and self.every > 0 and (step % self.every == 0 or step == last)

    def all(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir() if p.name.startswith(self.PREFIX) and p.name[len(self.PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(self.PREFIX):]))

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, step: int, state: dict[str, Any], loop: dict) -> Path:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        skeleton = {"state": {name: _pack(_state_of(obj), f"{name}", tensors) for name, obj in state.items()},
                    "loop": _pack(loop, "loop", tensors)}
        final = self.folder / f"{self.PREFIX}{step}"
        tmp = self.folder / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, tmp / "tensors.safetensors")
        (tmp / "state.json").write_text(json.dumps(skeleton))
        faults.point("checkpoint")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.all()[: -self.total_limit]:
            shutil.rmtree(old)
        return final

    def load(self, path: Path, state: dict[str, Any], device) -> dict:
        """Restore every object of `state` from `path`; -> the loop's own state (step, history, ...)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(path / "tensors.safetensors")
            skeleton = json.loads((path / "state.json").read_text())
        except (OSError, ValueError, SafetensorError) as e:
            raise UserError(f"{path}: unreadable checkpoint ({e.__class__.__name__}); delete the folder to "
                            "fall back to the one before it (or to a fresh start)") from None
        if not (isinstance(skeleton, dict) and isinstance(skeleton.get("state"), dict) and "loop" in skeleton):
            raise UserError(f"{path}: not a genaug checkpoint (state.json lacks its state and loop); delete the "
                            "folder to fall back to the one before it (or to a fresh start)")
        missing = set(state) - set(skeleton["state"])
        if missing:
            raise UserError(f"{path}: checkpoint lacks {sorted(missing)}; it was written by other code, delete it")
        try:
            for name, obj in state.items():
                saved = _unpack(skeleton["state"][name], tensors)
                if isinstance(obj, torch.Generator):
                    obj.set_state(saved)
                else:
                    _unwrapped(obj).load_state_dict(saved)
            return _unpack(skeleton["loop"], tensors)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            raise UserError(f"{path}: the checkpoint does not fit this stage ({e.__class__.__name__}); it was "
                            "written by other code or settings, delete the folder") from None


def _state_of(obj: Any) -> Any:
    return obj.get_state() if isinstance(obj, torch.Generator) else _unwrapped(obj).state_dict()


def _unwrapped(obj: Any) -> Any:
    """A DDP-wrapped model's own module: checkpoints hold the same keys for one process or several."""
    return obj.module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj


def _pack(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A state dict -> JSON, each tensor replaced by {"tensor": key} and stored in `tensors`.
    Dicts keep their key types (optimisers index state by int), tuples come back as lists."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {"tensor": key}
    if isinstance(value, dict):
        return {"dict": [[k, _pack(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"list": [_pack(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot checkpoint {key}: {type(value).__name__}")


def _unpack(packed: dict, tensors: dict[str, torch.Tensor]) -> Any:
    if "tensor" in packed:
        return tensors[packed["tensor"]]
    if "dict" in packed:
        return {k: _unpack(v, tensors) for k, v in packed["dict"]}
    if "list" in packed:
        return [_unpack(v, tensors) for v in packed["list"]]
    return packed["value"]
