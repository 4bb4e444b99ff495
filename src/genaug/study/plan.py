"""From a config to the ordered list of stage runs, each with the key that decides whether it is cached.

A step's key hashes exactly the config slice its output depends on plus the keys of its inputs, so a
changed MAE key re-runs the MAEs, their evaluations and the report, and leaves the split and the
generators alone. Of `runtime`, only what changes a stage's files enters a key (precision, log interval).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from genaug.config import Config, stage_key
from genaug.engine import resolve_device
from genaug.study import stages
from genaug.study.store import FORMAT_VERSION


@dataclass
class Step:
    stage: str  # folder under the run directory: split, ddpm, cyclegan, mae, eval
    name: str  # human-readable part of the folder name, e.g. thermal-real+gen-seed1
    key: str
    run: Callable[[stages.Context], None]
    inputs: dict[str, Step] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    work: int = 1  # progress-bar total
    unit: str = "steps"
    label: str = ""  # the work in words, for the plan table (default: "<work> <unit>")

    @property
    def folder(self) -> str:
        return f"{self.stage}/{self.name}-{self.key}"

    def describe(self) -> dict:
        return {"stage": self.stage, "name": self.name, "key": self.key, "folder": self.folder,
                "inputs": {role: step.folder for role, step in self.inputs.items()}, "params": self.params}


def make_plan(cfg: Config) -> list[Step]:
    data, study = cfg.data, cfg.study
    split = Step("split", "split", stage_key(FORMAT_VERSION, "split", cfg.seed, data), stages.run_split,
                 work=data.n_pool + data.n_train + data.n_test, unit="frames")
    plan = [split]
    # The train and test sets are drawn before the pool (stages.run_split), so they do not change with
    # n_pool: MAEs and evaluations key on this, and a new pool size retrains only the generators.
    train_test_key = stage_key(FORMAT_VERSION, "split", cfg.seed, data.model_dump(exclude={"n_pool"}))
    # What a training stage's files also depend on beyond its config slice: the precision it ran in
    # and the logging interval its loss curve (and final_loss) is averaged over.
    training = {"precision": "bf16" if resolve_device(cfg.runtime) == "cuda" else "fp32",
                "log_every": cfg.runtime.log_every}

    generators: dict[str, Step] = {}
    if "real+gen" in study.conditions:
        for modality in study.modalities:
            name = getattr(study.generators, modality)
            section = getattr(cfg, name)
            generators[modality] = Step(
                name, name,
                stage_key(FORMAT_VERSION, name, section, training, cfg.seed, study.n_synthetic, split.key),
                stages.GENERATOR_STAGES[name], {"split": split},
                {"modality": modality, "generator": name}, work=section.steps + study.n_synthetic,
                label=f"{section.steps} steps + {study.n_synthetic} images",
            )
        plan += generators.values()

    eval_slice = cfg.eval.model_dump(exclude={"batch_size"})  # batch size changes no result
    mask_slice = {"patch_size": cfg.mae.patch_size, "mask_ratio": cfg.mae.mask_ratio}
    maes, evals = [], []
    for modality in study.modalities:
        evals.append(Step(
            "eval", f"{modality}-mean-predictor",
            stage_key(FORMAT_VERSION, "eval", eval_slice, mask_slice, modality, "mean-predictor", train_test_key),
            stages.run_eval, {"split": split}, {"modality": modality, "condition": "mean-predictor"},
            work=data.n_test, unit="images",
        ))
        for condition in study.conditions:
            for seed in study.seeds:
                inputs = {"split": split}
                input_keys = {"split": train_test_key}
                if condition == "real+gen":
                    inputs["generator"] = generators[modality]
                    input_keys["generator"] = generators[modality].key
                params = {"modality": modality, "condition": condition, "seed": seed}
                name = f"{modality}-{condition}-seed{seed}"
                mae = Step("mae", name, stage_key(FORMAT_VERSION, "mae", cfg.mae, training, params, input_keys),
                           stages.run_mae, inputs, params, work=cfg.mae.steps)
                maes.append(mae)
                evals.append(Step("eval", name, stage_key(FORMAT_VERSION, "eval", eval_slice, mae.key),
                                  stages.run_eval, {"split": split, "mae": mae}, params,
                                  work=data.n_test, unit="images"))
    return plan + maes + evals
