"""`genaug status RUN_DIR`: which steps of a run are done, running, failed or pending, from its files.

Done: the step's manifest is there. Running: its temporary folder is there and the run's lock is held
by a live process (a run that takes the lock first deletes what killed runs left half-built). Failed: a
launcher job for it failed (`.launch/failed.json`, with the log). Pending: anything else; a pending step
with a checkpoint resumes from it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.table import Table

from genaug.errors import UserError
from genaug.checkpoints import Checkpoints
from genaug.study.store import CURRENT_PLAN_FILE, FAILED_FILE, LAUNCH_DIR, MANIFEST, PLAN_FILE, Store

STATES = ("done", "running", "failed", "pending")
COLOURS = {"done": "green", "running": "cyan", "failed": "red", "pending": "white"}


def _plan(run_dir: Path) -> list[dict]:
    for name in (CURRENT_PLAN_FILE, PLAN_FILE):
        path = run_dir / name
        if path.is_file():
            try:
                return json.loads(path.read_text())["steps"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise UserError(f"{path}: unreadable ({e.__class__.__name__}); run the study again to rewrite it") from None
    raise UserError(f"{run_dir}: no plan here ({PLAN_FILE}); give a directory written by genaug run")


def step_states(run_dir: Path) -> list[dict]:
    """[{stage, name, folder, state, detail}] in plan order."""
    run_dir = Path(run_dir)
    failed_path = run_dir / LAUNCH_DIR / FAILED_FILE
    failed = json.loads(failed_path.read_text()) if failed_path.is_file() else {}
    plan = _plan(run_dir)
    store = Store(run_dir)  # after the plan is found: a mistyped path is refused, not created
    live = store.building_now()
    rows = []
    for step in plan:
        folder = run_dir / step["folder"]
        where = (step["stage"], step["name"], step["key"])
        checkpoints = Checkpoints(store.checkpoints(*where), 0, 1).all()
        if (folder / MANIFEST).is_file():
            try:
                seconds = json.loads((folder / MANIFEST).read_text()).get("seconds")
            except (OSError, ValueError):
                seconds = None
            state, detail = "done", "" if seconds is None else f"{seconds:.1f} s"
        elif step["folder"] in failed:
            state, detail = "failed", f"job {failed[step['folder']]['job']}: {failed[step['folder']]['log']}"
        elif live and store.temporary(*where).is_dir():
            state, detail = "running", f"at {checkpoints[-1].name}" if checkpoints else ""
        else:
            state, detail = "pending", f"resumes from {checkpoints[-1].name}" if checkpoints else ""
        rows.append({"stage": step["stage"], "name": step["name"], "folder": step["folder"], "state": state,
                     "detail": detail})
    return rows


def status_table(run_dir: Path) -> tuple[Table, dict[str, int]]:
    rows = step_states(run_dir)
    table = Table(title=f"{run_dir}", title_justify="left")
    for column in ("stage", "run", "state", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["stage"], row["name"], f"[{COLOURS[row['state']]}]{row['state']}", row["detail"])
    counts = Counter(row["state"] for row in rows)
    return table, {state: counts[state] for state in STATES if counts[state]}
