"""From a config to the ordered list of stage runs, each with the key that decides whether it is cached.

A step's key hashes exactly the config slice its output depends on plus the keys of its inputs, so a
changed MAE key re-runs the MAEs, their evaluations and the report, and leaves the split and the
generators alone. Of `runtime`, only what changes a stage's files enters a key (precision, log interval).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from genaug.config import Config, stage_key
from genaug.data.labels import labels_slice, resolve_tasks
from genaug.engine import precision
from genaug.generators import external
from genaug.generators.registry import Entry
from genaug.study import stages
from genaug.study.conditions import spec_of
from genaug.study.store import FORMAT_VERSION


@dataclass
class Step:
    stage: str  # folder under the run directory: split, ddpm, cyclegan, ..., chain, mae, eval
    name: str  # human-readable part of the folder name, e.g. thermal-real+gen-cyclegan-seed1
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
                "inputs": {role: step.folder for role, step in self.inputs.items()}, "params": self.params,
                "work": self.work, "unit": self.unit}


def slug(name: str) -> str:
    """A condition or generator name as a folder name: real+gen:ddpm>cyclegan -> real+gen-ddpm-to-cyclegan."""
    return name.replace(":", "-").replace(">", "-to-")


def generator_steps(cfg: Config, name: str) -> int:
    """Optimiser steps of a trained generator (DDPM may count them in epochs over the pool)."""
    return cfg.ddpm.total_steps(cfg.data.n_pool) if name == "ddpm" else getattr(cfg, name).steps


def mae_steps(cfg: Config, n_extra: int) -> int:
    """Optimiser steps of one MAE: mae.steps for every condition (budget "steps"), or mae.epochs passes
    over the condition's own images, real + n_extra (budget "epochs", the seed's: more images, more steps)."""
    if cfg.study.budget == "steps":
        return cfg.mae.steps
    return -(-cfg.mae.epochs * (cfg.data.n_train + n_extra) // cfg.mae.batch_size)


def make_plan(cfg: Config) -> list[Step]:
    data, study = cfg.data, cfg.study
    # The split stores the probe's labels too: what changes them (tasks, KAIST min height, a CSV's content) keys
    # it. Its frames alone key the generators (frames_key), so a probe setting never retrains one.
    frames_key = stage_key(FORMAT_VERSION, "split", cfg.seed, data)
    split = Step("split", "split", stage_key(FORMAT_VERSION, "split", cfg.seed, data, labels_slice(data, cfg.probe)),
                 stages.run_split,
                 work=data.n_pool + data.n_train + data.n_test, unit="frames")
    plan = [split]
    # The train and test sets are drawn before the pool (stages.run_split), so they do not change with
    # n_pool: MAEs and evaluations key on this, and a new pool size retrains only the generators.
    train_test_key = stage_key(FORMAT_VERSION, "split", cfg.seed, data.model_dump(exclude={"n_pool"}))
    # What a training stage's files also depend on beyond its config slice: the precision it ran in
    # and the logging interval its loss curve (and final_loss) is averaged over.
    def training(stage: str) -> dict:
        return {"precision": precision(cfg.runtime, stage)[0], "log_every": cfg.runtime.log_every}

    # Synthetic sets by (modality, entry name); a chain ("ddpm>cyclegan") reuses the steps of its parts.
    generators: dict[tuple[str, str], Step] = {}

    def generator_step(entry: Entry) -> Step:
        if (entry.modality, entry.name) in generators:
            return generators[(entry.modality, entry.name)]
        spec, made = entry.spec, {"modality": entry.modality, "generator": entry.name}
        name = f"{entry.modality}-{slug(entry.name)}"
        if entry.source is not None:
            source, translator = (generator_step(part) for part in entry.parts())
            step = Step("chain", name, stage_key(FORMAT_VERSION, "chain", entry.name, cfg.quality, source.key,
                                                 translator.key),
                        stages.run_chain, {"split": split, "source": source, "translator": translator},
                        made, work=study.n_synthetic, unit="images")
        elif spec.trains:
            steps = generator_steps(cfg, spec.name)
            step = Step(
                spec.name, name,
                stage_key(FORMAT_VERSION, spec.name, entry.modality, getattr(cfg, spec.name), training(spec.name),
                          cfg.quality, cfg.seed, study.n_synthetic, frames_key),
                getattr(stages, spec.runner), {"split": split}, {**made, "steps": steps},
                work=steps + study.n_synthetic, label=f"{steps} steps + {study.n_synthetic} images",
            )
        else:  # made elsewhere: its content (external.fingerprint) keys it, so a changed folder rebuilds
            fingerprint = external.fingerprint(cfg, entry)
            step = Step(spec.name, name,
                        stage_key(FORMAT_VERSION, spec.name, entry.modality, fingerprint, cfg.quality, cfg.seed,
                                  study.n_synthetic, frames_key),
                        getattr(stages, spec.runner), {"split": split},
                        {**made, "argument": entry.argument, "fingerprint": fingerprint["summary"]},
                        work=study.n_synthetic, unit="images")
        generators[(entry.modality, entry.name)] = step
        return step

    # modality -> [(condition, synthetic set or None, extra images)]; the ratio sweep adds <condition>@<r>
    conditions: dict[str, list[tuple[str, Step | None, int]]] = {}
    for modality in study.modalities:
        base: list[tuple[str, Step | None]] = []
        for condition in study.conditions:
            if condition == "real+gen":
                base += [(f"real+gen:{entry.name}", generator_step(entry))
                         for entry in study.generators.entries(modality)]
            else:
                base.append((condition, None))
        conditions[modality] = [(c, g, study.n_synthetic if spec_of(c).extra else 0) for c, g in base]
        conditions[modality] += [(f"{c}@{r:g}", g, round(r * data.n_train)) for r in study.ratios
                                 for c, g in base if spec_of(c).extra]
    plan += generators.values()

    eval_slice = cfg.eval.model_dump(exclude={"batch_size", "paper_epochs_dropped"})  # change no eval result
    from genaug import mae as mae_lib

    # Before anything runs: a pretrained init must be on this machine and fit the images.
    for modality in study.modalities:
        mae_lib.check_init(cfg.mae, data.image_size, 3 if modality == "rgb" else data.thermal_channels)
    # Pretrained weights enter the MAE keys by their resolved folder (a hub snapshot's commit hash).
    weights = "scratch" if cfg.mae.init == mae_lib.SCRATCH else str(mae_lib.locate(cfg.mae.init).resolve())
    mask_slice = {"patch_size": mae_lib.patch_size(cfg.mae), "mask_ratio": cfg.mae.mask_ratio}
    # The probe reads the train and test sets' labels: what they are depends on the probe's label settings.
    tasks = resolve_tasks(data, cfg.probe)
    probe_slice = cfg.probe.model_dump(exclude={"batch_size"})  # the batch changes no probe result
    labels_key = stage_key(FORMAT_VERSION, "labels", train_test_key, probe_slice, labels_slice(data, cfg.probe))
    # a floor's encoder is the architecture untrained: no training setting changes it
    architecture = cfg.mae.model_dump(include={"init", "preset", "patch_size"})
    # Each MAE's evaluation (and probe) right after it: a study stopped partway already has test numbers
    # for every MAE it finished.
    runs = []
    for modality in study.modalities:
        runs.append(Step(
            "eval", f"{modality}-mean-predictor",
            stage_key(FORMAT_VERSION, "eval", eval_slice, mask_slice, modality, "mean-predictor", train_test_key),
            stages.run_eval, {"split": split}, {"modality": modality, "condition": "mean-predictor"},
            work=data.n_test, unit="images",
        ))

        for condition, synthetic, n_extra in conditions[modality]:
            for seed in study.seeds:
                inputs = {"split": split}
                input_keys = {"split": train_test_key}
                if synthetic is not None:
                    inputs["generator"] = synthetic
                    input_keys["generator"] = synthetic.key
                steps = mae_steps(cfg, n_extra)
                params = {"modality": modality, "condition": condition, "seed": seed}
                # what the extra images depend on beyond the inputs: how many, and their seed (classic, noise)
                extra = {"n_extra": n_extra, "extra_seed": cfg.seed} if n_extra else {}
                name = f"{modality}-{slug(condition)}-seed{seed}"
                mae = Step("mae", name, stage_key(FORMAT_VERSION, "mae", cfg.mae, weights, training("mae"), params, extra,
                                                  steps, input_keys),
                           stages.run_mae, inputs, {**params, "steps": steps, "n_extra": n_extra}, work=steps)
                runs.append(mae)
                runs.append(Step("eval", name, stage_key(FORMAT_VERSION, "eval", eval_slice, mae.key),
                                  stages.run_eval, {"split": split, "mae": mae}, params,
                                  work=data.n_test, unit="images"))
                if tasks:
                    runs.append(Step("probe", name, stage_key(FORMAT_VERSION, "probe", labels_key, mae.key),
                                     stages.run_probe, {"split": split, "mae": mae}, {**params, "tasks": tasks},
                                     work=data.n_train + data.n_test, unit="images"))
        # the probes' floors: a random encoder of the same architecture, and the pretrained one untrained
        floors = ["random-init"] + ([] if cfg.mae.init == mae_lib.SCRATCH else ["pretrained"])
        for floor in floors if tasks else []:
            runs.append(Step(
                "probe", f"{modality}-{floor}",
                stage_key(FORMAT_VERSION, "probe", architecture, weights, labels_key, modality, floor, cfg.seed),
                stages.run_probe, {"split": split}, {"modality": modality, "condition": floor, "tasks": tasks},
                work=data.n_train + data.n_test, unit="images",
            ))
    return plan + runs
