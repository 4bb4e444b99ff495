"""Decoded image sets, cached as uint8 safetensors: a set is decoded once, then loads in milliseconds.

A cached set is keyed by what its pixels depend on: the source (and, for files, each file's path,
size and modification time), the frame ids in order, the square size, the resize policy, the thermal
channel count and the modalities. The cache lives in $GENAUG_CACHE (default ~/.cache/genaug/frames);
deleting it only costs decoding time.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from genaug.config import DataConfig, stage_key
from genaug.data.frames import FrameRef, Frames
from genaug.errors import UserError


def cache_dir() -> Path:
    return Path(os.environ.get("GENAUG_CACHE") or Path.home() / ".cache" / "genaug" / "frames")


def set_key(data: DataConfig, seed: int, refs: list[FrameRef], modalities: tuple[str, ...]) -> str:
    files = []
    for ref in refs:
        for path in (ref.rgb, ref.thermal):
            if path is not None:
                stat = path.stat()
                files.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    source = {"source": data.source, "config": getattr(data, data.source)}
    if data.source == "scenes":
        source["seed"] = seed  # rendered, not read: the seed is the content
    return stage_key("frames", source, [ref.id for ref in refs], files, data.image_size, data.resize,
                     data.thermal_channels, modalities)


def load_cached(source, refs: list[FrameRef], data: DataConfig, seed: int, modalities: tuple[str, ...]
                ) -> tuple[Frames, bool]:
    """-> (frames, whether they came from the cache). Decodes with `source.load` on a miss."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = cache_dir() / f"{set_key(data, seed, refs, modalities)}.safetensors"
    if path.is_file():
        try:
            tensors = load_file(path)
            meta = json.loads((path.with_suffix(".json")).read_text())
            ids = [ref.id for ref in refs]
            if (meta["ids"] == ids and len(meta["night"]) == len(ids)
                    and all(m in tensors and len(tensors[m]) == len(ids) for m in modalities)):
                return Frames(meta["ids"], tensors.get("rgb"), tensors.get("thermal"), meta["night"]), True
        except (OSError, SafetensorError, ValueError, KeyError, TypeError):
            pass  # a damaged cache entry (unreadable, or not the set it is keyed by) is decoded again and overwritten
    frames = source.load(refs)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp_ids = path.with_name(f".{path.stem}.{os.getpid()}.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({m: frames.modality(m).contiguous() for m in modalities}, tmp)
        tmp_ids.write_text(json.dumps({"ids": frames.ids, "night": frames.night}))
        os.replace(tmp_ids, path.with_suffix(".json"))
        os.replace(tmp, path)  # the tensors land last: a visible .safetensors always has its ids beside it
    except (OSError, SafetensorError) as e:
        for leftover in (tmp, tmp_ids):
            with contextlib.suppress(OSError):
                leftover.unlink()
        folder = cache_dir()
        where = f"GENAUG_CACHE = '{folder}'" if os.environ.get("GENAUG_CACHE") else f"the frame cache {folder}"
        reason = getattr(e, "strerror", None) or f"{e.__class__.__name__}: {e}".splitlines()[0]
        raise UserError(f"{where}: cannot write decoded frames there ({reason}); point GENAUG_CACHE at a writable "
                        "folder with free space") from None
    return frames, False
