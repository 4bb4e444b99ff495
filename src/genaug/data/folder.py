"""Your own images: one folder per modality, frames paired by file stem.

    data.folder.rgb = "photos/rgb"          rgb/a.jpg  ->  frame "a"
    data.folder.thermal = "photos/lwir"     lwir/a.png ->  its thermal partner

Either folder may be left empty for a one-modality source. Folders are not searched recursively;
hidden files (names starting with ".", e.g. macOS "._a.jpg") are ignored. A stem in one folder only is
a missing partner (`data.missing`: stop, or skip and count). 16-bit thermal is scaled to uint8 by
`data.folder.thermal_16bit` (see `images.read_thermal`); the policy is recorded in `Scan.notes`.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from genaug.config import DataConfig
from genaug.data.frames import FrameRef, Frames, Scan, check_unique, load_files
from genaug.data.images import IMAGE_SUFFIXES
from genaug.errors import UserError

_SUFFIX_LIST = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
_POLICY = {"full": "divided by 65535, absolute", "minmax": "stretched per image to its own min..max"}
_FIRST = 5  # how many names an inspect report lists of each problem


class FolderSource:
    """Frames from `data.folder.rgb` and/or `data.folder.thermal`; id = file stem."""

    def __init__(self, data: DataConfig, seed: int):
        self.data = data
        self.seed = seed  # unused: a folder source holds every frame, in stem order
        cfg = data.folder
        self.folders = {m: Path(p).expanduser() for m, p in (("rgb", cfg.rgb), ("thermal", cfg.thermal)) if p}
        self.modalities: tuple[str, ...] = tuple(self.folders)

    def scan(self) -> Scan:
        if not self.folders:
            raise UserError("data.folder: set rgb, thermal or both to image folders")
        listed = {}
        for modality, folder in self.folders.items():
            key = f"data.folder.{modality}"
            _check_folder(folder, f"{key} = '{folder}'")
            listed[modality] = list_images(folder, key)
            if not listed[modality]:
                raise UserError(f"{key} = '{folder}': no images ({_SUFFIX_LIST}) in this folder "
                                f"(subfolders are not searched); point it at the folder holding the images")

        skipped: list[str] = []
        if len(listed) == 2:
            rgb, thermal = listed["rgb"], listed["thermal"]
            lonely = sorted([(stem, rgb[stem], "thermal") for stem in rgb.keys() - thermal.keys()]
                            + [(stem, thermal[stem], "rgb") for stem in thermal.keys() - rgb.keys()])
            if lonely and self.data.missing == "error":
                stem, path, other = lonely[0]
                raise UserError(
                    f"data.folder: {len(lonely)} image(s) have no partner with the same stem, first {path} "
                    f"(no '{stem}.*' in data.folder.{other} = '{self.folders[other]}'); add the partners "
                    f'or set data.missing = "skip"'
                )
            skipped = [stem for stem, _, _ in lonely]
            frames = [FrameRef(stem, rgb=rgb[stem], thermal=thermal[stem]) for stem in sorted(rgb.keys() & thermal.keys())]
            if not frames:
                raise UserError(f"data.folder: no file stem is in both '{self.folders['rgb']}' and "
                                f"'{self.folders['thermal']}'; pairs are matched by file name without extension")
        else:
            (modality, images), = listed.items()
            frames = [FrameRef(stem, **{modality: path}) for stem, path in images.items()]
        check_unique(frames, "data.folder")

        notes = [f"folder {m}: {folder.resolve()} ({len(listed[m])} images)" for m, folder in self.folders.items()]
        if len(listed) == 2:
            notes.append(f"{len(frames)} pairs matched by file stem; {len(skipped)} image(s) without a partner skipped")
        if "thermal" in listed:
            policy = self.data.folder.thermal_16bit
            notes.append(f"16-bit thermal: data.folder.thermal_16bit = '{policy}' ({_POLICY[policy]}); 8-bit as is")
        return Scan(frames, modalities=self.modalities, skipped_missing=skipped, notes=notes)

    def load(self, refs: list[FrameRef]) -> Frames:
        return load_files(refs, self.data, self.modalities, self.data.folder.thermal_16bit)

    # --- labels (probe.labels: a CSV with columns image,label)

    def _frame_ids(self) -> list[str]:
        """Every frame the folder source holds (its scan), the frames the CSV must label."""
        if getattr(self, "_ids", None) is None:
            self._ids = [f.id for f in self.scan().frames]
        return self._ids

    def label_files(self, refs: list[FrameRef]) -> list[Path]:
        return []  # the CSV enters the keys by its content (genaug.data.labels.labels_slice)

    def labels(self, refs: list[FrameRef], tasks: list[str], probe) -> dict[str, tuple[list[int], list[str]]]:
        """Task "label": each frame's class in the CSV; the classes are the distinct labels of the folder's
        frames, sorted (the same for every set drawn from the folder)."""
        table, path = read_labels_csv(probe.labels)
        frames = self._frame_ids()
        unlabelled = [stem for stem in frames if stem not in table]
        if unlabelled:
            raise UserError(f"probe.labels = '{probe.labels}': no row for image '{unlabelled[0]}' ({len(unlabelled)} "
                            f"of the folder's {len(frames)} images have none) in {path}; add a row image,label for "
                            "each (image = the file name without extension)")
        names = sorted({table[stem] for stem in frames})
        if len(names) < 2:
            raise UserError(f"probe.labels = '{probe.labels}': every image of the folder has the label '{names[0]}'; "
                            "a probe needs at least two classes: label the images by what they show, or set "
                            "probe.tasks = []")
        index = {name: i for i, name in enumerate(names)}
        return {task: ([index[table[ref.id]] for ref in refs], names) for task in tasks}

    def label_notes(self, tasks: list[str], probe) -> list[str]:
        table, path = read_labels_csv(probe.labels)
        known = set(self._frame_ids())
        unknown = [stem for stem in table if stem not in known]
        notes = [f"labels: {path} ({len(table)} rows)"]
        if unknown:
            shown = ", ".join(f"'{stem}'" for stem in unknown[:_FIRST])
            notes.append(f"probe.labels: {len(unknown)} row(s) name no image of the folder and were ignored "
                         f"(first: {shown})")
        return notes


def labels_csv_path(text: str, key: str = "probe.labels") -> Path:
    """The CSV probe.labels names (a relative path is read from the working directory, as data.folder.rgb)."""
    path = Path(text).expanduser()
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise UserError(f"{key} = '{text}': {what}; give a CSV with columns image,label (image = file stem), or "
                        "leave it empty for no probe")
    return path


def read_labels_csv(text: str, key: str = "probe.labels") -> tuple[dict[str, str], Path]:
    """stem -> label from a CSV with a header row naming the columns image and label (others ignored).

    UTF-8 (a BOM is fine), any line endings. Empty cells and an image listed twice are a UserError
    naming the CSV and the line.
    """
    path = labels_csv_path(text, key)
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise UserError(f"{key} = '{text}': cannot read {path} ({e.__class__.__name__}); make it readable") from None
    except UnicodeDecodeError:
        raise UserError(f"{key} = '{text}': {path} is not UTF-8 text; save it as a UTF-8 CSV") from None
    try:
        rows = list(csv.reader(io.StringIO(content, newline="")))
    except csv.Error as e:
        raise UserError(f"{key} = '{text}': {path} is not a readable CSV ({e}); fix the file") from None
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if "image" not in header or "label" not in header:
        shown = ",".join(rows[0]) if rows else "nothing"
        raise UserError(f"{key} = '{text}': the first line of {path} is '{shown[:60]}'; it must name the columns "
                        "image,label")
    image_col, label_col = header.index("image"), header.index("label")
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        image = row[image_col].strip() if image_col < len(row) else ""
        label = row[label_col].strip() if label_col < len(row) else ""
        if not image or not label:
            raise UserError(f"{key} = '{text}': {path} line {number} has an empty image or label; give both "
                            "(image = file stem)")
        if image in table:
            raise UserError(f"{key} = '{text}': {path} line {number} labels image '{image}' again (first on line "
                            f"{first_line[image]}); keep one row per image")
        table[image], first_line[image] = label, number
    if not table:
        raise UserError(f"{key} = '{text}': {path} has no rows under its header; add one row image,label per image")
    return table, path


def list_images(folder: Path, key: str = "") -> dict[str, Path]:
    """stem -> path of the image files (IMAGE_SUFFIXES, any case) directly in `folder`, sorted by stem.

    Two files with one stem (a.png and a.jpg) would be one frame id twice: a UserError naming both.
    """
    images, duplicates = _images(Path(folder))
    if duplicates:
        stem, paths = next(iter(duplicates.items()))
        where = f"{key}: " if key else ""
        raise UserError(
            f"{where}{' and '.join(str(p) for p in paths)} share the stem '{stem}' ({len(duplicates)} such stem(s) "
            f"in {folder}); frame ids are file stems and must be unique: rename or remove one"
        )
    return images


def inspect(rgb: Path | None, thermal: Path | None, headers: str = "sample", sample: int = 200,
            labels: str | None = None) -> dict:
    """What the folders hold, without stopping at the first problem.

    headers: "sample" reads up to `sample` file headers per folder, spread evenly over the sorted
    files; "all" reads every header; "decode" fully decodes every file (finds truncated files, and
    reports the pixel value range of 16-bit images). Unreadable files are counted, never raised.
    A folder that does not exist is a UserError. labels: a CSV (columns image,label) whose class balance
    over the frames is reported, with the frames it does not label and its rows naming no frame.
    """
    if headers not in ("sample", "all", "decode"):
        raise UserError(f"headers = '{headers}': use sample, all or decode")
    if sample < 1:
        raise UserError(f"sample = {sample}: must be at least 1")
    given = {m: Path(p).expanduser() for m, p in (("rgb", rgb), ("thermal", thermal)) if p}
    if not given:
        raise UserError("inspect: give an rgb folder, a thermal folder or both")

    report: dict = {"headers": headers, "folders": {}}
    listed: dict[str, dict[str, Path]] = {}
    for modality, folder in given.items():
        _check_folder(folder, f"{modality} folder '{folder}'")
        images, duplicates = _images(folder)
        listed[modality] = images
        info = {"path": str(folder), "images": len(images) + sum(len(p) - 1 for p in duplicates.values()),
                "duplicate_stems": {stem: [p.name for p in paths] for stem, paths in duplicates.items()}}
        info.update(_read_headers(list(images.values()), headers, sample))
        report["folders"][modality] = info

    if len(listed) == 2:
        r, t = listed["rgb"], listed["thermal"]
        paired = sorted(r.keys() & t.keys())
        lonely = sorted([str(r[s]) for s in r.keys() - t.keys()] + [str(t[s]) for s in t.keys() - r.keys()])
        report["paired"] = len(paired)
        report["missing_partner"] = {"count": len(lonely), "first": lonely[:_FIRST]}
        ids = paired
    else:
        ids = list(next(iter(listed.values())))
        report["paired"] = None
        report["missing_partner"] = {"count": 0, "first": []}
    report["frames"] = len(ids)
    report["example_ids"] = ids[:_FIRST]
    if labels:
        table, path = read_labels_csv(str(labels), "--labels")
        known = set(ids)
        counts = Counter(table[stem] for stem in ids if stem in table)
        report["labels"] = {
            "csv": str(path), "task": "label", "classes": dict(sorted(counts.items())),
            "unlabelled": {"count": sum(stem not in table for stem in ids),
                           "first": [stem for stem in ids if stem not in table][:_FIRST]},
            "unknown_rows": {"count": sum(stem not in known for stem in table),
                             "first": [stem for stem in table if stem not in known][:_FIRST]},
        }
    return report


# ----------------------------------------------------------------------------------------- helpers


def _check_folder(folder: Path, label: str) -> None:
    if not folder.exists():
        raise UserError(f"{label}: no such folder; set it to an existing folder of images")
    if not folder.is_dir():
        raise UserError(f"{label}: is a file, not a folder; set it to the folder holding the images")
    try:
        with os.scandir(folder):
            pass
    except OSError as e:
        raise UserError(f"{label}: cannot list the folder ({e.strerror}); make it readable (chmod u+rx) or "
                        "choose another folder") from None


def _images(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """-> (stem -> first path, stem -> all paths for stems held by several files), both sorted by stem."""
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        by_stem.setdefault(path.stem, []).append(path)
    images = {stem: by_stem[stem][0] for stem in sorted(by_stem)}
    duplicates = {stem: by_stem[stem] for stem in sorted(by_stem) if len(by_stem[stem]) > 1}
    return images, duplicates


def _bit_depth(mode: str) -> int:
    """Bits per channel of a PIL mode."""
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _read_headers(paths: list[Path], headers: str, sample: int) -> dict:
    if headers == "sample" and len(paths) > sample:
        chosen = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, sample).round().astype(int))]
    else:
        chosen = paths
    sizes: Counter = Counter()
    modes: Counter = Counter()
    depths: Counter = Counter()
    unreadable: list[str] = []
    low = high = None
    for path in chosen:
        try:
            with Image.open(path) as image:
                if headers == "decode":
                    image.load()
                    if _bit_depth(image.mode) > 8:
                        values = np.asarray(image)
                        lo, hi = values.min().item(), values.max().item()
                        low = lo if low is None else min(low, lo)
                        high = hi if high is None else max(high, hi)
                w, h = image.size
                sizes[f"{w}x{h}"] += 1
                modes[image.mode] += 1
                depths[_bit_depth(image.mode)] += 1
        except Exception as e:  # noqa: BLE001 - a report lists every kind of unreadable file
            unreadable.append(f"{path} ({type(e).__name__}: {e})")
    info = {
        "checked": len(chosen),
        "resolutions": dict(sizes.most_common()),
        "modes": dict(modes.most_common()),
        "bit_depth": dict(sorted(depths.items())),
        "unreadable": {"count": len(unreadable), "first": unreadable[:_FIRST]},
    }
    if headers == "decode":
        info["high_bit_range"] = None if low is None else [low, high]  # pixel values of >8-bit images
    return info
