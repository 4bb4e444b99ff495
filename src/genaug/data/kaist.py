"""The KAIST multispectral pedestrian dataset as a data source.

Layout (see the KAIST section of the reference anchors)::

    ROOT/images/setXX/VYYY/visible/I#####.jpg     RGB
    ROOT/images/setXX/VYYY/lwir/I#####.jpg        LWIR (same name = same instant)
    ROOT/imageSets/*.txt                          split files: one `setXX/VYYY/I#####` a line, CRLF
    ROOT/annotations/setXX/VYYY/I#####.txt        boxes of that frame (Dollar's bbGt text format), read
                                                  only for the probe's labels

A frame's id is `setXX/VYYY/I#####`, its group `setXX/VYYY`. Day sets are set00-02 and set06-08,
night sets set03-05 and set09-11.

Listing uses `os.scandir` only (no stat of every file, no image decoding), so a full 95,000-pair tree
is scanned in about a second; pixels are read only by `KaistSource.load` and by `inspect`'s header check.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from genaug.config import DataConfig
from genaug.data.frames import PERSON_NAMES, FrameRef, Frames, Scan, load_files
from genaug.errors import UserError

DAY_SETS: frozenset[str] = frozenset({"set00", "set01", "set02", "set06", "set07", "set08"})
NIGHT_SETS: frozenset[str] = frozenset({"set03", "set04", "set05", "set09", "set10", "set11"})
SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDERS = {"visible": "rgb", "lwir": "thermal"}  # folder on disk -> FrameRef field
HEADER_MODES = ("sample", "all", "decode")
EXAMPLES = 3  # how many paths / lines an error or a report names
ANNOTATIONS = "annotations"  # beside images/: annotations/setXX/VYYY/I#####.txt
PERSON = "person"  # the one box label the person task counts (not people, cyclist or person?)


def is_night(set_name: str) -> bool:
    """True for set03-05 and set09-11; False for the day sets (and for names KAIST does not have)."""
    return set_name in NIGHT_SETS


def _night(set_name: str) -> bool | None:
    """Day/night of a set, None for a set name outside KAIST's twelve."""
    if set_name in DAY_SETS:
        return False
    return True if set_name in NIGHT_SETS else None


# ------------------------------------------------------------------------------------------ split files


def read_split_file(path: Path) -> list[str]:
    """One frame id a line (`setXX/VYYY/I#####`); CRLF or LF; blank lines and surrounding space ignored."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: split file not found; give a file in imageSets/ or a path") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the split file ({e.__class__.__name__}); check the path") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; a split file lists one setXX/VYYY/I##### a line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _split_names(root: Path) -> list[str]:
    folder = root / "imageSets"
    try:
        return sorted(e.name for e in os.scandir(folder) if e.name.endswith(".txt") and e.is_file())
    except OSError:
        return []


def resolve_split(root: Path, name: str, key: str = "split file") -> Path:
    """A bare name (`train-all-02` or `train-all-02.txt`) is looked up in root/imageSets; a path is used
    as is. Missing -> UserError naming the file and a few of the available names."""
    root = Path(root).expanduser()
    if "/" in name or os.sep in name or Path(name).is_absolute() or name.startswith("~"):
        path = Path(name).expanduser()
        if path.is_file():
            return path
        raise UserError(f"{key} = '{name}': {path} is not a file; give a name in {root / 'imageSets'} "
                        f"or an existing path")
    candidates = [root / "imageSets" / name]
    if not name.endswith(".txt"):
        candidates.append(root / "imageSets" / f"{name}.txt")
    for path in candidates:
        if path.is_file():
            return path
    available = _split_names(root)
    shown = ", ".join(available[:8]) + (", ..." if len(available) > 8 else "")
    found = f"available: {shown}" if available else f"{root / 'imageSets'} holds no .txt split files"
    raise UserError(f"{key} = '{name}': {candidates[-1]} not found ({found}); give one of those or a path")


# ------------------------------------------------------------------------------------------ the tree


def _subdirs(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".") and e.is_dir()), key=lambda e: e.name)
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return []


def scan_tree(root: Path) -> tuple[list[FrameRef], list[str]]:
    """Every frame under root/images: (FrameRefs sorted by id, ids having exactly one of the two images).

    Only `setXX/VYYY/{visible,lwir}/*.{jpg,jpeg,png}` counts (suffix case ignored); a frame's image that
    is absent is None in its FrameRef. Two files for one frame (I00001.jpg and I00001.png) is a UserError.
    """
    images = Path(root).expanduser() / "images"
    found: dict[str, dict] = {}
    for set_entry in _subdirs(str(images)):
        night = _night(set_entry.name)
        for video_entry in _subdirs(set_entry.path):
            group = f"{set_entry.name}/{video_entry.name}"
            for folder_entry in _subdirs(video_entry.path):
                field = FOLDERS.get(folder_entry.name)
                if field is None:
                    continue
                with os.scandir(folder_entry.path) as it:
                    for entry in it:
                        stem, dot, suffix = entry.name.rpartition(".")
                        if not dot or not stem or f".{suffix.lower()}" not in SUFFIXES or not entry.is_file():
                            continue
                        frame_id = f"{group}/{stem}"
                        record = found.get(frame_id)
                        if record is None:
                            record = found[frame_id] = {"group": group, "night": night}
                        elif field in record:
                            raise UserError(f"{record[field]} and {entry.path}: two {folder_entry.name} images "
                                            f"for frame {frame_id}; keep one of them")
                        record[field] = entry.path
    refs, lonely = [], []
    for frame_id in sorted(found):
        r = found[frame_id]
        rgb, thermal = r.get("rgb"), r.get("thermal")
        refs.append(FrameRef(frame_id, Path(rgb) if rgb else None, Path(thermal) if thermal else None,
                             r["night"], r["group"]))
        if rgb is None or thermal is None:
            lonely.append(frame_id)
    return refs, lonely


def _missing_path(root: Path, ref: FrameRef) -> Path:
    """The path the absent image of a one-sided frame would have (same name, the partner's folder)."""
    present = ref.rgb or ref.thermal
    folder = "lwir" if ref.thermal is None else "visible"
    return root / "images" / ref.group / folder / present.name


def _root(root_text: str, key: str = "data.kaist.root") -> Path:
    if not root_text.strip():
        raise UserError(f"{key} is empty; set it to the folder holding images/")
    root = Path(root_text).expanduser()
    if not root.is_dir():
        raise UserError(f"{key} = '{root_text}': {root} is not a folder; set it to the folder "
                        "holding images/ (and imageSets/)")
    if not (root / "images").is_dir():
        raise UserError(f"{key} = '{root_text}': {root / 'images'} does not exist; set it to "
                        "the folder holding images/setXX/VYYY/{visible,lwir}/")
    return root


# ------------------------------------------------------------------------------------------ annotations


@dataclass(frozen=True)
class Box:
    """One box of a bbGt annotation file (pixels of the 640x512 frame)."""

    label: str  # person, people, cyclist or person?
    x: float
    y: float
    w: float
    h: float
    occluded: int = 0


def annotation_path(root: Path, frame_id: str) -> Path:
    """Where frame `setXX/VYYY/I#####`'s boxes lie: ROOT/annotations/setXX/VYYY/I#####.txt."""
    return Path(root) / ANNOTATIONS / f"{frame_id}.txt"


def parse_bbgt(text: str, where: object = "annotation") -> list[Box]:
    """Boxes of a bbGt text file: `% bbGt version=3`, then `label x y w h occluded vx vy vw vh ignore angle`
    a line (versions 0-2 have fewer trailing fields). CRLF or LF; blank lines and `%` lines skipped.
    A line that is not a box is a UserError naming `where` and the line number."""
    boxes = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        parts = line.split()
        try:
            if not 5 <= len(parts) <= 12:
                raise ValueError
            numbers = [float(v) for v in parts[1:]]
            if not all(np.isfinite(numbers)) or numbers[2] < 0 or numbers[3] < 0:
                raise ValueError
        except ValueError:
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise UserError(f"{where} line {number}: '{shown}' is not a bbGt box line (label x y w h occluded vx vy "
                            "vw vh ignore angle, numbers after the label); fix or delete the line") from None
        boxes.append(Box(parts[0], *numbers[:4], occluded=int(numbers[4]) if len(numbers) > 4 else 0))
    return boxes


def read_annotation(path: Path) -> list[Box]:
    """The boxes of one annotation file; a missing, unreadable or malformed file is a one-line UserError."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: annotation file not found; restore it from the KAIST release, or set "
                        "probe.tasks = [] to run without the probe") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the annotation file ({e.__class__.__name__}); make it readable") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; a KAIST annotation file is bbGt text (% bbGt version=3, "
                        "then one box a line)") from None
    return parse_bbgt(text, path)


def shows_person(boxes: list[Box], min_height: int) -> bool:
    """KAIST's "reasonable" person: a `person` box (not people, cyclist, person?) at least min_height tall."""
    return any(box.label == PERSON and box.h >= min_height for box in boxes)


def annotation_files(root: Path, refs: list[FrameRef]) -> list[Path]:
    """Each frame's annotation file; a missing annotations/ folder or file is a one-line UserError."""
    root = Path(root)
    folder = root / ANNOTATIONS
    if not folder.is_dir():
        raise UserError(f"{folder}: no annotations folder beside images/ (the probe's person labels are read from "
                        "annotations/setXX/VYYY/I#####.txt); add it from the KAIST release, or set probe.tasks = [] "
                        "to run without the probe")
    paths = [annotation_path(root, ref.id) for ref in refs]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: annotation file missing ({len(missing)} of the {len(paths)} frames read have "
                        "none); restore it from the KAIST release, or set probe.tasks = [] to run without the probe")
    return paths


def person_labels(root: Path, refs: list[FrameRef], min_height: int) -> list[int]:
    """1 where the frame shows a person (see shows_person), else 0, in the order of refs."""
    return [int(shows_person(read_annotation(path), min_height)) for path in annotation_files(root, refs)]


# ------------------------------------------------------------------------------------------ the source


class KaistSource:
    """KAIST frames selected by `data.kaist` (split files, sets, videos, day/night, stride)."""

    def __init__(self, data: DataConfig, seed: int):
        self.data = data
        self.seed = seed  # the selection is deterministic; the seed is kept for the protocol

    def scan(self) -> Scan:
        cfg = self.data.kaist
        root = _root(cfg.root)
        refs, _ = scan_tree(root)
        if not refs:
            raise UserError(f"data.kaist.root: no images under {root / 'images'}; expected "
                            "images/setXX/VYYY/visible/I#####.jpg and .../lwir/I#####.jpg")
        by_id = {ref.id: ref for ref in refs}
        _check_filters(cfg, refs, root)

        train_path = resolve_split(root, cfg.train_split, "data.kaist.train_split") if cfg.train_split else None
        test_path = resolve_split(root, cfg.test_split, "data.kaist.test_split") if cfg.test_split else None
        train = _from_split(train_path, by_id) if train_path else list(refs)
        test = _from_split(test_path, by_id) if test_path else None

        sets, videos = set(cfg.sets), set(cfg.videos)
        train = [r for r in train if (not sets or r.group.split("/")[0] in sets) and (not videos or r.group in videos)
                 and (cfg.time == "all" or r.night is (cfg.time == "night"))]
        if cfg.stride > 1:
            position: Counter[str] = Counter()
            kept = []
            for r in train:  # in id order, so in frame order within each video
                if position[r.group] % cfg.stride == 0:
                    kept.append(r)
                position[r.group] += 1
            train = kept

        notes = [_describe(root, cfg, train_path, test_path)]
        if test is not None:
            test_ids = {r.id for r in test}
            overlap = sum(r.id in test_ids for r in train)
            if overlap:  # a test frame in the pool or an MAE training set would flatter the evaluation
                train = [r for r in train if r.id not in test_ids]
                if not train:
                    raise UserError(f"data.kaist.test_split = '{cfg.test_split}' holds all {overlap} training frames "
                                    f"selected by {_filters(cfg)} (test/train leakage); choose a test split "
                                    "disjoint from the training frames")
                notes.append(f"{overlap} frames of the test split were left out of the training frames")

        skipped: list[str] = []
        lonely = [r for r in train + (test or []) if r.rgb is None or r.thermal is None]
        if lonely:
            if self.data.missing == "error":
                raise UserError(
                    f"{_missing_path(root, lonely[0])} is missing: {len(lonely)} of the selected KAIST frames "
                    f"(count includes this one) have an RGB image without its LWIR partner or the reverse; "
                    f"restore them, or "
                    f'set data.missing = "skip" to skip them')
            skipped = [r.id for r in lonely]
            gone = set(skipped)
            train = [r for r in train if r.id not in gone]
            test = [r for r in test if r.id not in gone] if test is not None else None
            notes.append(f"{len(skipped)} frames skipped for a missing partner image (data.missing = \"skip\")")

        if not train:
            raise UserError(f"no KAIST frames left after the selection ({_filters(cfg)}) under {root}; "
                            "widen data.kaist.sets / videos / time or check the split file")
        if test is not None and not test:
            raise UserError(f"data.kaist.test_split = '{cfg.test_split}': no frames with both images left "
                            f"in {test_path}; restore the images or choose another split file")
        return Scan(train, test_frames=test, skipped_missing=skipped, notes=notes)

    def load(self, refs: list[FrameRef]) -> Frames:
        return load_files(refs, self.data, ("rgb", "thermal"))

    def label_files(self, refs: list[FrameRef]) -> list[Path]:
        return annotation_files(_root(self.data.kaist.root), refs)

    def labels(self, refs: list[FrameRef], tasks: list[str], probe) -> dict[str, tuple[list[int], list[str]]]:
        """task -> (class per frame, class names); KAIST offers "person" (see shows_person)."""
        root = _root(self.data.kaist.root)
        return {task: (person_labels(root, refs, probe.kaist_min_height), list(PERSON_NAMES)) for task in tasks}


def _from_split(path: Path, by_id: dict[str, FrameRef]) -> list[FrameRef]:
    """The tree's frames a split file lists, in id order. Duplicate or unmatched lines: UserError."""
    lines = read_split_file(path)
    if not lines:
        raise UserError(f"{path}: the split file lists no frames; give a file with one setXX/VYYY/I##### a line")
    seen: set[str] = set()
    for line in lines:
        if line in seen:
            raise UserError(f"{path}: the line '{line}' appears twice; list each frame once")
        seen.add(line)
    unmatched = [line for line in lines if line not in by_id]
    if unmatched:
        shown = ", ".join(f"'{line}'" for line in unmatched[:EXAMPLES])
        raise UserError(f"{path}: {len(unmatched)} of its {len(lines)} lines match no frame under the root's "
                        f"images/ (first: {shown}); check data.kaist.root and the split file")
    return [by_id[i] for i in sorted(seen)]


def _check_filters(cfg, refs: list[FrameRef], root: Path) -> None:
    """A set or video name that is not in the tree is a typo, not an empty selection."""
    groups = sorted({r.group for r in refs})
    sets = sorted({g.split("/")[0] for g in groups})
    for name in cfg.sets:
        if name not in sets:
            raise UserError(f"data.kaist.sets: '{name}' is not a set under {root / 'images'} (found "
                            f"{', '.join(sets[:12])}); use names like \"set00\"")
    for name in cfg.videos:
        if name not in groups:
            hint = "" if "/" in name else f"; write it as setXX/{name}"
            raise UserError(f"data.kaist.videos: '{name}' is not a video under {root / 'images'} (found e.g. "
                            f"{', '.join(groups[:4])}){hint}")


def _filters(cfg) -> str:
    parts = [f"train_split = '{cfg.train_split}'" if cfg.train_split else "every frame"]
    if cfg.sets:
        parts.append(f"sets = {cfg.sets}")
    if cfg.videos:
        parts.append(f"videos = {cfg.videos}")
    if cfg.time != "all":
        parts.append(f"time = '{cfg.time}'")
    if cfg.stride > 1:
        parts.append(f"stride = {cfg.stride}")
    return "data.kaist: " + ", ".join(parts)


def _describe(root: Path, cfg, train_path: Path | None, test_path: Path | None) -> str:
    train = f"train split {train_path}" if train_path else "every frame"
    filters = _filters(cfg).split(", ", 1)
    extra = f", {filters[1]}" if len(filters) > 1 else ""
    test = f"; test split {test_path}" if test_path else "; no test split"
    return f"kaist root {root}: {train}{extra}{test}"


# ------------------------------------------------------------------------------------------ inspect


def inspect(root: Path, headers: str = "sample", sample: int = 200, min_height: int = 50) -> dict:
    """What a KAIST root holds, for `genaug data inspect`: counts, splits, missing partners, image headers.

    headers: "sample" reads the header (size, mode) of up to `sample` files spread evenly over the tree;
    "all" of every file; "decode" fully decodes every file. Unreadable files are counted, never raised.
    Labels: the person task's balance over every pair (a `person` box at least min_height tall), from
    annotations/; missing or malformed annotation files are counted, never raised.
    """
    if headers not in HEADER_MODES:
        raise UserError(f"headers = '{headers}': choose one of {', '.join(HEADER_MODES)}")
    root = _root(str(root), "KAIST root")
    refs, lonely = scan_tree(root)
    by_id = {ref.id: ref for ref in refs}
    pairs = [r for r in refs if r.rgb is not None and r.thermal is not None]
    time = Counter({None: "unknown", False: "day", True: "night"}[r.night] for r in pairs)

    splits = {}
    for name in _split_names(root):
        try:
            lines = read_split_file(root / "imageSets" / name)
        except UserError as e:
            splits[name] = {"error": str(e)}
            continue
        matched = [line for line in lines if line in by_id]
        splits[name] = {"lines": len(lines), "matched": len(matched), "duplicates": len(lines) - len(set(lines)),
                        "pairs": sum(by_id[line].rgb is not None and by_id[line].thermal is not None
                                     for line in matched),
                        "unmatched_examples": [line for line in lines if line not in by_id][:EXAMPLES]}

    files = [p for r in refs for p in (r.rgb, r.thermal) if p is not None]
    if headers == "sample" and len(files) > sample:
        step = len(files) / max(sample, 1)
        files = [files[int(i * step)] for i in range(max(sample, 0))]
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    unreadable: list[str] = []
    for path in files:
        try:
            with Image.open(path) as image:
                if headers == "decode":
                    image.load()
                sizes[f"{image.size[0]}x{image.size[1]}"] += 1
                modes[image.mode] += 1
        except Exception:  # noqa: BLE001 - any failure to read is "unreadable", reported, never raised
            unreadable.append(str(path))

    return {
        "root": str(root),
        "pairs": len(pairs),
        "frames": len(refs),
        "per_set": dict(sorted(Counter(r.group.split("/")[0] for r in pairs).items())),
        "per_video": dict(sorted(Counter(r.group for r in pairs).items())),
        "per_time": dict(sorted(time.items())),
        "splits": splits,
        "missing_partner": {"count": len(lonely),
                            "examples": [str(_missing_path(root, by_id[i])) for i in lonely[:EXAMPLES]]},
        "headers": {"mode": headers, "checked": len(files), "sizes": dict(sizes.most_common()),
                    "modes": dict(modes.most_common()),
                    "unreadable": {"count": len(unreadable), "examples": unreadable[:EXAMPLES]}},
        "examples": [r.id for r in pairs[:EXAMPLES]],
        "labels": _inspect_labels(root, pairs, min_height),
    }


def _inspect_labels(root: Path, pairs: list[FrameRef], min_height: int) -> dict:
    """The person task's label balance over `pairs` (overall and by day/night), and the box labels seen."""
    folder = root / ANNOTATIONS
    if not folder.is_dir():
        return {"annotations": None, "note": f"{folder} does not exist: no labels, so no probe (add the KAIST "
                "annotations, or set probe.tasks = [])"}
    balance = {name: 0 for name in PERSON_NAMES}
    by_time: dict[str, dict[str, int]] = {}
    boxes: Counter[str] = Counter()
    missing, malformed = [], []
    for ref in pairs:
        path = annotation_path(root, ref.id)
        if not path.is_file():
            missing.append(str(path))
            continue
        try:
            found = read_annotation(path)
        except UserError as e:
            malformed.append(str(e))
            continue
        boxes.update(box.label for box in found)
        name = PERSON_NAMES[shows_person(found, min_height)]
        balance[name] += 1
        time = by_time.setdefault({None: "unknown", False: "day", True: "night"}[ref.night],
                                  {n: 0 for n in PERSON_NAMES})
        time[name] += 1
    return {"annotations": str(folder), "task": "person", "min_height": min_height,
            "person": balance, "per_time": dict(sorted(by_time.items())), "box_labels": dict(boxes.most_common()),
            "missing": {"count": len(missing), "examples": missing[:EXAMPLES]},
            "malformed": {"count": len(malformed), "examples": malformed[:EXAMPLES]}}
