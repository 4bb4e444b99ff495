"""From a config to the ordered list of stage runs, each with the key that decides whether it is cached.

A step's key hashes exactly the config slice its output depends on plus the keys of its inputs, so a
changed MAE key re-runs the MAEs, their evaluations and the report, and leaves the split and the
generators alone. `runtime` is in no key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from genaug.config import Config, stage_key
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

    generators: dict[str, Step] = {}
    if "real+gen" in study.conditions:
        for modality in study.modalities:
            name = getattr(study.generators, modality)
            section = getattr(cfg, name)
            generators[modality] = Step(
                name, name,
                stage_key(FORMAT_VERSION, name, section, cfg.seed, study.n_synthetic, split.key),
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
            stage_key(FORMAT_VERSION, "eval", eval_slice, mask_slice, modality, "mean-predictor", split.key),
            stages.run_eval, {"split": split}, {"modality": modality, "condition": "mean-predictor"},
            work=data.n_test, unit="images",
        ))
        for condition in study.conditions:
            for seed in study.seeds:
                inputs = {"split": split}
                if condition == "real+gen":
                    inputs["generator"] = generators[modality]
                params = {"modality": modality, "condition": condition, "seed": seed}
                name = f"{modality}-{condition}-seed{seed}"
                mae = Step("mae", name,
                           stage_key(FORMAT_VERSION, "mae", cfg.mae, params, {r: s.key for r, s in inputs.items()}),
                           stages.run_mae, inputs, params, work=cfg.mae.steps)
                maes.append(mae)
                evals.append(Step("eval", name, stage_key(FORMAT_VERSION, "eval", eval_slice, mae.key),
                                  stages.run_eval, {"split": split, "mae": mae}, params,
                                  work=data.n_test, unit="images"))
    return plan + maes + evals
