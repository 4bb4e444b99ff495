"""The run directory: one folder per stage output, keyed by what it depends on, written atomically.

    RUN_DIR/<stage>/<name>-<key>/      e.g. RUN_DIR/mae/thermal-real+gen-seed1-3f2a9c0d11e4/
        ...the stage's files...
        manifest.json                  written last: its presence is what "complete" means

A stage builds into a hidden temporary folder beside its final place, which is renamed into place only
when the stage function returns; the manifest follows. A folder without a manifest (a killed run) is
never read and is replaced by the next attempt. Training checkpoints live beside it, in
`RUN_DIR/<stage>/.checkpoints-<name>-<key>/`, so a re-run resumes training where the killed attempt
left off; they are deleted once the stage is complete.

Under several processes (`torchrun`, `accelerate launch`; see genaug.distributed) only the main one
writes here: it holds the lock and builds every stage folder. The others run the same stages (their
share of the data-parallel work) into a private scratch folder, `RUN_DIR/.scratch-rank<r>/`, which is
deleted when the stage ends and never becomes an output; they write no manifest and delete nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from genaug import distributed
from genaug.errors import UserError

FORMAT_VERSION = 2  # bump when a stage's files change meaning; older folders are then rebuilt
MANIFEST = "manifest.json"
LOCK = ".lock"  # "<pid> <host>" of the genaug run building this directory
SCRATCH = ".scratch-rank"  # + <rank>: what a non-main process builds, deleted after each stage
# The run directory's own files, beside the stage folders (README: "What a run directory holds")
PLAN_FILE = "plan.json"  # the steps of the study the report describes
CURRENT_PLAN_FILE = ".current-plan.json"  # the plan of the run in progress (or the last one), for `genaug status`
PROVENANCE_FILE = "provenance.json"
LAUNCH_DIR = ".launch"  # a launcher's job config, failures and submitit's logs
FAILED_FILE = "failed.json"  # in LAUNCH_DIR: folder -> the failed job and its log


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class Store:
    def __init__(self, run_dir: Path):
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"{run_dir}: the output path is a file; give --out a directory")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{run_dir}: cannot create the run directory ({e.strerror}); choose another --out") from None
        self.root = run_dir

    @contextmanager
    def locked(self) -> Iterator[str | None]:
        """Hold RUN_DIR/.lock while a run builds here; yields a note when a stale lock was taken over.

        A lock whose process is alive on this host refuses the second run with its PID; one whose
        process is gone (a killed run) is taken over. A lock from another host cannot be checked and
        is refused, naming the file to delete once that run is known to be over.

        Only the main process of a multi-process run takes it; the others yield None and leave it be.
        """
        if not distributed.is_main():
            yield None
            return
        path = self.root / LOCK
        me, note = f"{os.getpid()} {socket.gethostname()}", None
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                holder = _read_lock(path)
                if holder is None:  # vanished or half-written: try again
                    path.unlink(missing_ok=True)
                    continue
                pid, host = holder
                if host != socket.gethostname():
                    raise UserError(f"{self.root}: a genaug run on host {host} (PID {pid}) holds {path}; delete that "
                                    "file if that run is over") from None
                if _alive(pid):
                    raise UserError(f"{self.root}: another genaug run (PID {pid}) is building this run directory; "
                                    f"wait for it to finish or stop it (kill {pid})") from None
                path.unlink(missing_ok=True)
                note = f"took over the lock of PID {pid}, which is no longer running"
        with os.fdopen(fd, "w") as f:
            f.write(me)
        # What killed runs left half-built: nobody else builds here now (a multi-process run's others start
        # later), and `genaug status` reads a temporary folder under a live lock as "running"
        for stale in [*self.root.glob(f"{SCRATCH}*"), *self.root.glob("*/.tmp-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        try:
            yield note
        finally:
            if _read_lock(path) == (os.getpid(), socket.gethostname()):
                path.unlink(missing_ok=True)

    def building_now(self) -> bool:
        """Is a live genaug run (on this host) holding this directory's lock?"""
        holder = _read_lock(self.root / LOCK)
        return holder is not None and holder[1] == socket.gethostname() and _alive(holder[0])

    def path(self, stage: str, name: str, key: str) -> Path:
        return self.root / stage / f"{name}-{key}"

    def checkpoints(self, stage: str, name: str, key: str) -> Path:
        return self.root / stage / f".checkpoints-{name}-{key}"

    def temporary(self, stage: str, name: str, key: str) -> Path:
        """Where `building` fills a stage output before it becomes `path(stage, name, key)`."""
        return self.root / stage / f".tmp-{name}-{key}"

    def is_complete(self, path: Path) -> bool:
        return (path / MANIFEST).is_file()

    @contextmanager
    def building(self, stage: str, name: str, key: str, inputs: dict[str, str]) -> Iterator[tuple[Path, dict]]:
        """Yield (temporary folder, manifest dict); on success the folder becomes the stage output.

        The caller fills the folder and may add entries to the manifest dict.

        In a non-main process of a multi-process run the folder is private scratch, deleted afterwards
        whatever happens: no output, no manifest, and the stage's checkpoints are left to the main process.
        Every process starts a stage only when all of them have come to the same one: a fast main
        process never completes a stage before a slow one has decided what it still has to build.
        """
        if distributed.world_size() > 1:
            here = f"{stage}/{name}-{key}"
            everywhere = distributed.all_gather_object(here)
            if any(other != here for other in everywhere):
                raise RuntimeError(f"the processes of this run disagree on the stage to build: {everywhere}")
        if not distributed.is_main():
            scratch = self.root / f"{SCRATCH}{distributed.rank()}"
            shutil.rmtree(scratch, ignore_errors=True)  # a killed run's
            folder = scratch / stage / f"{name}-{key}"
            folder.mkdir(parents=True)
            manifest = {"stage": stage, "name": name, "key": key, "inputs": inputs, "format_version": FORMAT_VERSION}
            started = time.time()
            try:
                yield folder, manifest  # filled alike, never written
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            manifest["seconds"] = round(time.time() - started, 2)
            return
        final, tmp = self.path(stage, name, key), self.temporary(stage, name, key)
        for stale in (tmp, final):
            if stale.exists():  # a killed attempt: never trusted, rebuilt from scratch
                shutil.rmtree(stale)
        tmp.mkdir(parents=True)
        manifest: dict[str, Any] = {
            "stage": stage,
            "name": name,
            "key": key,
            "inputs": inputs,
            "format_version": FORMAT_VERSION,
        }
        started = time.time()
        try:
            yield tmp, manifest
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.replace(tmp, final)
        finished = time.time()
        # this attempt's span on the wall clock: the report's timeline of where the study's time went
        manifest.update(seconds=round(finished - started, 2), started=round(started, 2), finished=round(finished, 2))
        write_json_atomic(final / MANIFEST, manifest)
        shutil.rmtree(self.checkpoints(stage, name, key), ignore_errors=True)


def load_plan(run_dir: Path) -> list[dict]:
    """The steps of the study in `run_dir`'s plan.json, as `Step.describe` wrote them."""
    return json.loads((Path(run_dir) / PLAN_FILE).read_text())["steps"]


def load_current_plan(run_dir: Path) -> list[dict]:
    """The steps of the run in progress (or the last one), as `Step.describe` wrote them; [] if none."""
    path = Path(run_dir) / CURRENT_PLAN_FILE
    return json.loads(path.read_text())["steps"] if path.is_file() else []


def _read_lock(path: Path) -> tuple[int, str] | None:
    try:
        pid, host = path.read_text().split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
