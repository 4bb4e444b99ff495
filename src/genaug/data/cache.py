"""Decoded image sets, cached as uint8 safetensors: a set is decoded once, then loads in milliseconds.

A cached set is keyed by what its pixels depend on: the source (and, for files, each file's path,
size and modification time), the frame ids in order, the square size, the resize policy, the thermal
channel count and the modalities. A set's probe labels are cached beside its pixels
(`<key>.labels-<labels key>.json`), keyed by the set's key, the labels slice (the resolved tasks, KAIST's
min height, a folder CSV's content) and each annotation file's path, size and time: changing only the
probe settings re-reads labels, never re-decodes pixels. The cache lives in $GENAUG_CACHE (default
~/.cache/genaug/frames); deleting it only costs decoding time.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from genaug.config import DataConfig, stage_key
from genaug.data.frames import FrameRef, Frames
from genaug.data.labels import LabelReader
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


def load_cached(source, refs: list[FrameRef], data: DataConfig, seed: int, modalities: tuple[str, ...],
                labels: LabelReader | None = None) -> tuple[Frames, bool]:
    """-> (frames, whether their pixels came from the cache). Decodes with `source.load` on a miss.

    With a LabelReader, `frames.labels` / `frames.label_names` are filled (from the cache, else read and
    cached); labels are read before any pixel is decoded, so a bad annotation file stops the set early.
    """
    key = set_key(data, seed, refs, modalities)
    values, names = _labels_cached(labels, refs, key) if labels is not None else ({}, {})
    frames, hit = _frames_cached(source, refs, key, modalities)
    frames.labels, frames.label_names = values, names
    return frames, hit


def _labels_cached(labels: LabelReader, refs: list[FrameRef], frames_key: str
                   ) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    if not labels.tasks:
        return {}, {}
    path = cache_dir() / f"{frames_key}.labels-{labels.key(refs, frames_key)}.json"
    ids = [ref.id for ref in refs]
    if path.is_file():
        try:
            meta = json.loads(path.read_text())
            values, names = meta["labels"], meta["label_names"]
            if (meta["ids"] == ids and list(values) == labels.tasks and list(names) == labels.tasks
                    and all(len(values[t]) == len(ids) and all(isinstance(v, int) and 0 <= v < len(names[t])
                                                               for v in values[t]) for t in labels.tasks)):
                return values, names
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry is read again and overwritten
    values, names = labels.read(refs)
    _write(path, lambda tmp: tmp.write_text(json.dumps({"ids": ids, "labels": values, "label_names": names})))
    return values, names


def _write(path: Path, write) -> None:
    """Write a cache file atomically (`write(tmp)`, then rename); an unwritable cache is a one-line UserError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _unwritable(e)


def _unwritable(e: Exception):
    folder = cache_dir()
    where = f"GENAUG_CACHE = '{folder}'" if os.environ.get("GENAUG_CACHE") else f"the frame cache {folder}"
    reason = getattr(e, "strerror", None) or f"{e.__class__.__name__}: {e}".splitlines()[0]
    raise UserError(f"{where}: cannot write decoded frames there ({reason}); point GENAUG_CACHE at a writable "
                    "folder with free space") from None


def _frames_cached(source, refs: list[FrameRef], key: str, modalities: tuple[str, ...]) -> tuple[Frames, bool]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = cache_dir() / f"{key}.safetensors"
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
        _unwritable(e)
    return frames, False
