"""Labels for the probe: per task, one class index per frame, read once with the frames and cached with them.

Tasks each source offers (`probe.tasks = ["default"]` picks the first, the source's own):

    scenes  person (at least one pedestrian), car (at least one car), cars (how many: 0..scenes.MAX_CARS),
            night (day / night)
    kaist   person (a `person` box at least probe.kaist_min_height tall in annotations/setXX/VYYY/I#####.txt)
    folder  label (the CSV probe.labels, columns image,label; default only when probe.labels is set)

`probe.tasks = []` reads nothing (and a KAIST root then needs no annotations). A source answers
`labels(refs, tasks, probe) -> {task: (class per frame, class names)}`, `label_files(refs)` (the files the
labels are read from, whose size and time key the cache; a missing one is a UserError) and, optionally,
`label_notes(tasks, probe)` (facts for the split's manifest).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from genaug.config import DataConfig, ProbeConfig, stage_key
from genaug.data.frames import FrameRef
from genaug.errors import UserError

DEFAULT = "default"
TASKS: dict[str, tuple[str, ...]] = {"scenes": ("person", "car", "cars", "night"), "kaist": ("person",), "folder": ("label",)}


def default_tasks(data: DataConfig, probe: ProbeConfig) -> list[str]:
    """The source's own task: person for scenes and KAIST; label for a folder with probe.labels, else none."""
    if data.source == "folder":
        return ["label"] if probe.labels else []
    return [TASKS[data.source][0]]


def resolve_tasks(data: DataConfig, probe: ProbeConfig) -> list[str]:
    """probe.tasks with "default" replaced by the source's own task, checked, duplicates dropped, in order."""
    offered = TASKS[data.source]
    tasks: list[str] = []
    for task in probe.tasks:
        for name in default_tasks(data, probe) if task == DEFAULT else [task]:
            if name not in offered:
                raise UserError(f"probe.tasks: '{task}' is not a task of the {data.source} source (it offers "
                                f"{', '.join(offered)}, or \"default\"); use those names, or [] for no probe")
            if name == "label" and not probe.labels:
                raise UserError("probe.tasks lists 'label', but probe.labels is empty; set probe.labels to a CSV "
                                "with columns image,label, or remove 'label' from probe.tasks")
            if name not in tasks:
                tasks.append(name)
    return tasks


def labels_slice(data: DataConfig, probe: ProbeConfig) -> dict:
    """The part of the probe settings that changes the stored labels (with the source config and the frames):
    the resolved tasks, KAIST's min height, a folder CSV's content. It keys the split and the cached labels."""
    tasks = resolve_tasks(data, probe)
    out: dict = {"tasks": tasks}
    if tasks and data.source == "kaist":
        out["kaist_min_height"] = probe.kaist_min_height
    if tasks and data.source == "folder":
        from genaug.data.folder import labels_csv_path

        path = labels_csv_path(probe.labels)
        try:
            out["labels_csv_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise UserError(f"probe.labels = '{probe.labels}': cannot read {path} ({e.__class__.__name__}); make "
                            "it readable") from None
    return out


def balance(values: list[int], names: list[str]) -> dict[str, int]:
    """Frames per class, every class named (0 where none)."""
    counts = Counter(values)
    return {name: counts.get(i, 0) for i, name in enumerate(names)}


class LabelReader:
    """Reads one source's labels under one probe config: what the split stage and the frame cache use."""

    def __init__(self, source, data: DataConfig, probe: ProbeConfig):
        self.source, self.data, self.probe = source, data, probe
        self.tasks = resolve_tasks(data, probe)
        self.slice = labels_slice(data, probe) if self.tasks else {"tasks": []}

    def check(self, refs: list[FrameRef]) -> None:
        """Before any pixel is decoded: every file the labels of refs need is there (else a one-line UserError)."""
        if self.tasks:
            self.source.label_files(refs)

    def key(self, refs: list[FrameRef], frames_key: str) -> str:
        """The cached labels' key: the frames' key, the labels slice, and each label file's path, size and time."""
        files = []
        for path in self.source.label_files(refs) if self.tasks else []:
            stat = Path(path).stat()
            files.append((str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns))
        return stage_key("labels", frames_key, self.slice, files)

    def read(self, refs: list[FrameRef]) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
        """-> (task -> class per frame of refs, task -> class names); both empty without tasks."""
        if not self.tasks:
            return {}, {}
        read = self.source.labels(refs, self.tasks, self.probe)
        values = {task: [int(v) for v in read[task][0]] for task in self.tasks}
        names = {task: list(read[task][1]) for task in self.tasks}
        for task in self.tasks:
            assert len(values[task]) == len(refs) and all(0 <= v < len(names[task]) for v in values[task]), task
        return values, names

    def notes(self) -> list[str]:
        """Facts for the split's manifest: the tasks, the rule, and e.g. CSV rows naming no frame."""
        if not self.tasks:
            return ["labels: none (probe.tasks = [] or the source has no labels)"]
        notes = [f"labels: {', '.join(self.tasks)}"]
        if self.data.source == "kaist":
            notes.append(f"KAIST person: a 'person' box at least probe.kaist_min_height = "
                         f"{self.probe.kaist_min_height} pixels tall (people, cyclist and person? boxes do not count)")
        extra = getattr(self.source, "label_notes", None)
        return notes + (extra(self.tasks, self.probe) if extra else [])
