"""Watching a study as it trains: each training stage's logged rows, sent to an experiment tracker.

`runtime.log_with` names one of accelerate's trackers ("tensorboard", "wandb", ...; "none", the
default, sends nothing). Every training loop (`engine.Trainer`) of a stage then opens one tracker run
named by the stage's final folder, `mae/rgb-real-seed0-<key>`, and each row it appends to the stage's
log.jsonl goes to that run too, at the same step, with the learning rate of every optimiser: log.jsonl
stays the record, the tracker is a live view of it. Tracker files live in RUN_DIR/tracking/, outside
the stage's temporary build folder, so they outlast its rename; TensorBoard's runs mirror the stage
folders (`tensorboard --logdir RUN_DIR/tracking`).

A resumed stage continues its run: the TensorBoard run is the same folder, and the new writer's
`purge_step` drops the rows that the checkpoint undid (logged after it, before the stop), as log.jsonl
drops them. Other trackers get a new run of the same name each time a loop starts or rolls back.

accelerate's tracker classes are used without an Accelerator: `Accelerator.init_trackers` gives all its
trackers one project name and one logging folder and has no way to close and reopen one, while a run
here is one stage of many, reopened at every resume or roll-back. Only the main process logs.
"""

from __future__ import annotations

from pathlib import Path

# accelerate's trackers (`accelerate.utils.LoggerType` less "all"): tests/test_tracking.py checks the list
TRACKERS = ("tensorboard", "wandb", "trackio", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab")
OFF = "none"
FOLDER = "tracking"  # under the run directory


def available(name: str) -> bool:
    """Is `name`'s package installed (accelerate's own check; tensorboardX counts for tensorboard)?"""
    from accelerate.tracking import get_available_trackers

    return name in {str(t) for t in get_available_trackers()}


def missing(name: str) -> str | None:
    """Why `runtime.log_with = name` cannot log here, or None when it can."""
    if name == OFF or available(name):
        return None
    return f"the tracker '{name}' is not installed; pip install {name}, or set runtime.log_with = \"{OFF}\""


class Run:
    """One stage loop's tracker run: `start(first_step)` (again on a resume or roll-back), `log`, `finish`."""

    def __init__(self, name: str, run_dir: Path, run: str):
        self.name, self.folder, self.run = name, Path(run_dir) / FOLDER, run
        self.study = Path(run_dir).resolve().name
        self.tracker = None

    def start(self, first_step: int) -> None:
        """Open (or reopen) the run; its rows from `first_step` on are about to be (re)logged."""
        self.finish()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tracker = self._make(first_step)
        self.tracker.start()

    def log(self, values: dict[str, float], step: int) -> None:
        self.tracker.log(values, step=step)

    def finish(self) -> None:
        if self.tracker is not None:
            tracker, self.tracker = self.tracker, None
            tracker.finish()

    def _make(self, first_step: int):
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        cls = LOGGER_TYPE_TO_CLASS[self.name]
        folder, run, study = self.folder, self.run, self.study
        # each tracker's own words for "project", "run name" and "local folder"; the study is the project
        if self.name == "tensorboard":  # tracking/<stage>/<run>: TensorBoard's run is the path
            return cls(run, folder, purge_step=first_step)
        if self.name == "aim":  # one Aim repository per study
            return cls(run, folder)
        if self.name == "wandb":
            return cls(study, name=run, group=run.split("/")[0], dir=str(folder))
        if self.name == "mlflow":  # where: MLFLOW_TRACKING_URI, as mlflow decides
            return cls(experiment_name=study, run_name=run)
        if self.name == "clearml":
            return cls(study, task_name=run)
        if self.name == "dvclive":
            return cls(dir=str(folder / run))
        if self.name == "swanlab":
            return cls(study, experiment_name=run, logdir=str(folder))
        if self.name == "trackio":
            return cls(study, name=run)
        return cls(study)  # comet_ml names its experiments itself


def learning_rates(state: dict) -> dict[str, float]:
    """"lr/<name>" (or "lr/<name>/<group>" for several parameter groups) -> the rate of each optimiser in a
    fit's `state` now: read before a logged step, the rate that step uses."""
    import torch

    rates = {}
    for name, obj in state.items():
        if isinstance(obj, torch.optim.Optimizer):  # accelerate's AcceleratedOptimizer is one too
            groups = obj.param_groups
            for i, group in enumerate(groups):
                rates[f"lr/{name}" + (f"/{i}" if len(groups) > 1 else "")] = float(group["lr"])
    return rates
