"""Run health: training that went wrong without a NaN, found from what every stage already records.

A diverged or stalled MAE seed looks like an effect of the data: in A/A studies of the quickstart recipe
without gradient clipping, one `real-aa` seed in four studies of twenty stalled at a training loss of
0.45-0.49 where its siblings reached 0.25-0.27, ended with 1.7-1.9x their held-out error, and widened
its study's interval to about [-40 %, +250 %], with nothing said. Three rules, each on numbers a run
already writes (its `log.jsonl` and its evaluation), flag such runs; the report states them:

    diverged  the watched loss ended (mean of the last tenth of the logged rows) at least RISE x its
              best logged value: it rose materially after its best point
    stalled   the watched loss ended at least STALL x the median end of the other seeds of the same
              modality and condition (at least 2 others)
    outlier   the held-out masked MSE is at least OUTLIER_RATIO x the median of its condition's seeds
              AND more than OUTLIER_Z robust SDs (1.4826 x MAD, floored at 1 % of the median) above it
              (at least 3 seeds)
    near floor  the held-out masked MSE is at least NEAR_FLOOR x the floor's (the training-set mean
              predictor, or the true patch means with mae.norm_pix_loss): the run learned little that
              generalises, as a learning rate far too high leaves it (quickstart MAEs end 3-4x below it)

Thresholds from the quickstart's healthy runs (README, "Run health"): a healthy MAE or DDPM ends within
1.1x of its best row, its seeds' training ends within 1.1x of each other and held-out errors within 1.1x.
Adversarial losses (a GAN's G and D terms) rise and fall by design, so the translators are watched on
their reconstruction loss only (`WATCHED`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genaug.generators.registry import GENERATORS
from genaug.study.store import MANIFEST

RISE = 1.25
STALL = 1.3
OUTLIER_RATIO = 1.25
OUTLIER_Z = 3.5
NEAR_FLOOR = 0.8
MIN_ROWS = 5  # fewer logged rows say nothing about a curve's shape

# stage -> the logged loss the rules read: the one that must go down in a healthy run
WATCHED = {"mae": "loss", **{name: spec.watched for name, spec in GENERATORS.items() if spec.watched}}

RULES = [
    f"diverged: the training loss ended (mean of the last tenth of its logged rows) at least {RISE}x its best "
    "logged value",
    f"stalled: the training loss ended at least {STALL}x the median end of the other seeds of its condition "
    "(needs 3 seeds)",
    f"outlier: the held-out masked MSE is at least {OUTLIER_RATIO}x the median of its condition's seeds and more "
    f"than {OUTLIER_Z} robust SDs (1.4826 x MAD) above it (needs 3 seeds)",
    f"near floor: the held-out masked MSE is at least {NEAR_FLOOR}x the floor's (the mean predictor of its "
    "modality; trained quickstart MAEs end 3-4x below it)",
    "GAN translators are watched on their reconstruction loss (CycleGAN: cycle, pix2pix: G_L1); their "
    "adversarial terms rise and fall by design",
]


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def curve(stage: str, rows: list[dict]) -> np.ndarray:
    """(rows,) the watched loss of a stage's log; empty when the stage is not watched."""
    name = WATCHED.get(stage)
    return np.array([row[name] for row in rows if name in row], dtype=np.float64)


def loss_end(values: np.ndarray) -> float:
    """Where a curve ended: the mean of its last tenth (at least one row), less noisy than the last row."""
    return float(values[-max(1, len(values) // 10):].mean())


def flag(stage: str, run: str, kind: str, evidence: str) -> dict:
    return {"stage": stage, "run": run, "kind": kind, "evidence": evidence}


def diverged(stage: str, run: str, rows: list[dict]) -> list[dict]:
    values = curve(stage, rows)
    if len(values) < MIN_ROWS or not np.all(np.isfinite(values)):
        return []
    best = int(values.argmin())
    end = loss_end(values)
    if end < RISE * values[best]:
        return []
    return [flag(stage, run, "diverged", f"{WATCHED[stage]} fell to {values[best]:.4g} at step {rows[best]['step']} "
                 f"and ended at {end:.4g} ({end / values[best]:.2f}x its best)")]


def stalled(stage: str, ends: dict[str, float]) -> list[dict]:
    """`ends`: run -> where its watched loss ended, for the seeds of one modality and condition."""
    flags = []
    for run, end in ends.items():
        others = [v for k, v in ends.items() if k != run]
        if len(others) < 2:
            continue
        typical = float(np.median(others))
        if typical > 0 and end >= STALL * typical:
            flags.append(flag(stage, run, "stalled", f"{WATCHED[stage]} ended at {end:.4g}, {end / typical:.2f}x the "
                              f"median {typical:.4g} of its {len(others)} sibling seeds"))
    return flags


def outliers(values: dict[str, float], metric: str = "held-out masked MSE") -> list[dict]:
    """`values`: run -> its held-out error, for the seeds of one modality and condition. Higher only: a
    seed that learned better than its siblings is not a failed run."""
    if len(values) < 3:
        return []
    array = np.array(list(values.values()), dtype=np.float64)
    median = float(np.median(array))
    spread = max(1.4826 * float(np.median(np.abs(array - median))), 0.01 * median)
    flags = []
    for run, value in values.items():
        z = (value - median) / spread if spread > 0 else 0.0
        if median > 0 and value >= OUTLIER_RATIO * median and z > OUTLIER_Z:
            flags.append(flag("eval", run, "outlier", f"{metric} {value:.4g} is {value / median:.2f}x the median "
                              f"{median:.4g} of its {len(values)} seeds ({z:.1f} robust SDs above)"))
    return flags


def no_better_than_floor(values: dict[str, float], floor: float | None) -> list[dict]:
    """`values`: run -> its held-out error; `floor`: the mean predictor's on the same images (None: unknown)."""
    if floor is None:
        return []
    return [flag("eval", run, "near floor", f"held-out masked MSE {value:.4g} is {value / floor:.2f}x the floor's "
                 f"{floor:.4g}") for run, value in values.items() if value >= NEAR_FLOOR * floor]


def group_flags(stage: str, logs: dict[str, list[dict]], held_out: dict[str, float],
                floor: float | None = None) -> list[dict]:
    """Every rule for the seeds of one condition: `logs` run -> its logged rows, `held_out` run -> its
    held-out error (either may hold only the runs complete so far), `floor` the modality's floor error."""
    flags = [f for run, rows in logs.items() for f in diverged(stage, run, rows)]
    ends = {run: loss_end(c) for run, rows in logs.items() if len(c := curve(stage, rows)) >= MIN_ROWS}
    flags += stalled(stage, ends)
    flags += outliers(held_out)
    flags += no_better_than_floor(held_out, floor)
    return flags


def study_flags(root: Path, steps: list[dict]) -> list[dict]:
    """Every flag of a complete study: `steps` the plan's step descriptions (plan.json), `root` the run
    directory. MAEs are grouped by modality and condition; generators are single runs (diverged only)."""
    flags: list[dict] = []
    groups: dict[tuple, dict[str, dict]] = {}
    floors = {}
    for step in steps:
        p = step["params"]
        if step["stage"] == "eval" and p["condition"] == "mean-predictor":
            floors[p["modality"]] = json.loads((root / step["folder"] / MANIFEST).read_text())["masked_mse"]
        elif step["stage"] == "mae":
            group = groups.setdefault((p["modality"], p["condition"]), {"logs": {}, "held_out": {}})
            group["logs"][step["name"]] = read_log(root / step["folder"] / "log.jsonl")
        elif step["stage"] == "eval" and p["condition"] != "mean-predictor":
            manifest = json.loads((root / step["folder"] / MANIFEST).read_text())
            groups.setdefault((p["modality"], p["condition"]), {"logs": {}, "held_out": {}})["held_out"][
                step["name"]] = manifest["masked_mse"]
        elif step["stage"] in WATCHED:
            flags += diverged(step["stage"], step["name"], read_log(root / step["folder"] / "log.jsonl"))
    for (modality, _), group in groups.items():
        flags += group_flags("mae", group["logs"], group["held_out"], floors.get(modality))
    return flags


def step_flags(root: Path, steps: list[dict], stage: str, name: str, params: dict, own_log: list[dict],
               own_metric: float | None) -> list[dict]:
    """The flags of one step as it finishes, against the sibling seeds already complete: what its manifest
    records and the console prints. The report recomputes every flag once all seeds are in."""
    if stage not in WATCHED and stage != "eval":
        return []
    siblings = [s for s in steps if s["stage"] == stage and s["name"] != name
                and s["params"].get("modality") == params.get("modality")
                and s["params"].get("condition") == params.get("condition")
                and (root / s["folder"] / MANIFEST).is_file()]
    if stage == "eval":
        if own_metric is None or params.get("condition") == "mean-predictor":
            return []
        held_out = {s["name"]: json.loads((root / s["folder"] / MANIFEST).read_text())["masked_mse"]
                    for s in siblings}
        floors = [json.loads((root / s["folder"] / MANIFEST).read_text())["masked_mse"] for s in steps
                  if s["stage"] == "eval" and s["params"].get("condition") == "mean-predictor"
                  and s["params"].get("modality") == params.get("modality")
                  and (root / s["folder"] / MANIFEST).is_file()]
        return [f for f in outliers({**held_out, name: own_metric}) + no_better_than_floor(
            {name: own_metric}, floors[0] if floors else None) if f["run"] == name]
    if stage != "mae":
        return diverged(stage, name, own_log)
    logs = {s["name"]: read_log(root / s["folder"] / "log.jsonl") for s in siblings}
    return [f for f in group_flags(stage, {**logs, name: own_log}, {}) if f["run"] == name]
