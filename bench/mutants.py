"""Break the code on purpose, one change at a time, and see which changes the tests let through.

Each mutant, listed in bench/mutants/<area>.toml, is one small source change that a user would feel (Holm dropped, EMA never
updated, a resize ignored, ...) and the tests that should catch it. For each, this script copies
`src/`, `tests/` and `configs/` to a temporary folder, applies the change there (the working tree is
never touched), runs those tests against the copy (PYTHONPATH puts the copy's `src` ahead of the
editable install) and prints one row: killed (a test failed, as it should) or SURVIVED (every test
passed: the suite does not guard that line). A change whose `old` text is not found exactly once is
reported as stale, so the list cannot silently rot.

    .venv/bin/python bench/mutants.py                 # every mutant, about 10 minutes on 2 cores
    .venv/bin/python bench/mutants.py --only holm ema # by name (substring)
    .venv/bin/python bench/mutants.py --list          # names, files and tests, nothing run
    .venv/bin/python bench/mutants.py --baseline      # first check the unchanged copy passes those tests
    .venv/bin/python bench/mutants.py --only ema --tests tests/generators   # other tests than the listed ones

Not part of CI: a figure for BENCHMARKS.md, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "configs", "pyproject.toml")
LISTS = ROOT / "bench" / "mutants"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root
    old: str  # must occur exactly once in `file`
    new: str
    tests: tuple[str, ...]  # pytest node ids or paths, relative to the repository root
    why: str  # what a user would suffer if this change shipped


def load_mutants() -> list[Mutant]:
    """Every [[mutant]] of bench/mutants/*.toml (one file an area of the code), in file order."""
    mutants = []
    for path in sorted(LISTS.glob("*.toml")):
        for entry in tomllib.loads(path.read_text())["mutant"]:
            mutants.append(Mutant(**{**entry, "tests": tuple(entry["tests"])}))
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        sys.exit(f"mutant names repeat across {LISTS}: {sorted(n for n in names if names.count(n) > 1)}")
    return mutants


def select(names: list[str] | None) -> list[Mutant]:
    mutants = load_mutants()
    if not names:
        return mutants
    chosen = [m for m in mutants if any(n in m.name for n in names)]
    if not chosen:
        sys.exit(f"no mutant matches {names}; --list shows the names")
    return chosen


def copy_tree(dest: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)


def apply(root: Path, mutant: Mutant) -> str | None:
    """Apply the change in the copy at `root`; None, or why it cannot be applied (stale)."""
    path = root / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        return f"`old` found {count} times in {mutant.file}"
    path.write_text(text.replace(mutant.old, mutant.new))
    return None


def run_tests(root: Path, tests: tuple[str, ...], timeout_s: float) -> tuple[int, float, str]:
    env = dict(os.environ, PYTHONPATH=str(root / "src"), HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        code, output = -1, "timed out"
    return code, time.perf_counter() - started, output


def last_failure(output: str) -> str:
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return failed[0][:110] if failed else output.strip().splitlines()[-1][:110] if output.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="mutant names (substrings) to run")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--baseline", action="store_true", help="first run each mutant's tests unchanged")
    parser.add_argument("--timeout-s", type=float, default=900, help="per mutant")
    parser.add_argument("--tests", nargs="+", help="run these test paths for every mutant instead of its own "
                        "(e.g. an older suite, from a checkout of that commit with this script copied in)")
    args = parser.parse_args()
    mutants = select(args.only)
    if args.tests:
        from dataclasses import replace

        mutants = [replace(m, tests=tuple(args.tests)) for m in mutants]
    if args.list:
        for m in mutants:
            print(f"{m.name:36s} {m.file:40s} {' '.join(m.tests)}\n    {m.why}")
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="genaug-mutants-") as tmp:
        if args.baseline:
            clean = Path(tmp) / "clean"
            copy_tree(clean)
            tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            code, seconds, output = run_tests(clean, tests, args.timeout_s * len(mutants))
            print(f"baseline: {'pass' if code == 0 else 'FAIL'} in {seconds:.0f} s ({len(tests)} test targets)")
            if code != 0:
                sys.exit(f"the unchanged code fails its tests; fix that first:\n{last_failure(output)}")
        for i, mutant in enumerate(mutants):
            root = Path(tmp) / f"m{i}"
            copy_tree(root)
            stale = apply(root, mutant)
            if stale:
                rows.append((mutant, "STALE", 0.0, stale))
            else:
                code, seconds, output = run_tests(root, mutant.tests, args.timeout_s)
                status = {0: "SURVIVED", 5: "NO TESTS", -1: "TIMEOUT"}.get(code, "killed")
                rows.append((mutant, status, seconds, last_failure(output) if status == "killed" else ""))
            shutil.rmtree(root, ignore_errors=True)
            mutant, status, seconds, detail = rows[-1]
            print(f"[{i + 1}/{len(mutants)}] {status:8s} {seconds:6.1f} s  {mutant.name}  {detail}", flush=True)

    print("\n| mutant | file | change | tests | result | s |\n| --- | --- | --- | --- | --- | --- |")
    for mutant, status, seconds, _ in rows:
        change = f"`{mutant.old.strip()[:50]}` → `{mutant.new.strip()[:30]}`".replace("|", "\\|")
        print(f"| {mutant.name} | {mutant.file.removeprefix('src/genaug/')} | {change} | "
              f"{', '.join(t.removeprefix('tests/') for t in mutant.tests)} | {status} | {seconds:.0f} |")
    survived = [r[0].name for r in rows if r[1] != "killed"]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} killed" + (f"; not killed: {', '.join(survived)}" if survived else ""))


if __name__ == "__main__":
    main()
