"""The study's typed configuration: TOML in, validated models out, every default written back.

A config file is a short diff over the defaults below (see `configs/quickstart.toml`). Loading
validates everything before anything is built: an unknown key is rejected with its full path and the
closest valid key, a wrong type or an out-of-range value with the key and the value, and cross-key
constraints (sizes that must fit together) with every key involved.

Only `runtime` is left out of stage keys: it says *where* and *how fast* to compute, never *what*.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from genaug.errors import UserError

Modality = Literal["rgb", "thermal"]
Condition = Literal["real", "real+gen"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ScenesSource(Strict):
    """The built-in procedural street scenes (`genaug.data.scenes`)."""

    width: int = Field(160, ge=32, le=4096, description="canvas width in pixels (KAIST: 640)")
    height: int = Field(128, ge=32, le=4096, description="canvas height in pixels (KAIST: 512)")
    n_frames: int = Field(2000, ge=1, description="how many frames the source holds")
    night_fraction: float = Field(0.3, ge=0.0, le=1.0)


class DataConfig(Strict):
    source: Literal["scenes"] = "scenes"
    scenes: ScenesSource = ScenesSource()
    image_size: int = Field(32, ge=8, le=1024, description="square side every model sees")
    resize: Literal["crop", "squash"] = Field(
        "crop", description="crop: aspect-preserving centre crop; squash: the seed's distortion"
    )
    n_pool: int = Field(600, ge=1, description="generator-training frames, in no MAE set")
    n_train: int = Field(200, ge=1, description="real frames each MAE trains on")
    n_test: int = Field(100, ge=1, description="held-out real frames every MAE is evaluated on")


class DDPMConfig(Strict):
    """A diffusers UNet2DModel + DDPMScheduler, sampled with a few-step solver."""

    block_out_channels: list[int] = Field([32, 64, 128], min_length=2)
    layers_per_block: int = Field(1, ge=1, le=4)
    attention: bool = Field(True, description="self-attention at the lowest resolution")
    train_timesteps: int = Field(1000, ge=10)
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = Field(
        "epsilon", description="what the UNet predicts; 'sample' (x0) gives structure sooner on tiny budgets"
    )
    steps: int = Field(3000, ge=1, description="optimiser steps")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    sampler: Literal["dpmsolver++", "ddim", "ddpm"] = "dpmsolver++"
    sample_steps: int = Field(20, ge=1, le=1000)
    sample_batch_size: int = Field(64, ge=1)


class CycleGANConfig(Strict):
    """RGB -> thermal CycleGAN (Zhu et al. 2017) with junyanz defaults, scaled down for the CPU."""

    ngf: int = Field(32, ge=4, description="generator base width")
    ndf: int = Field(32, ge=4, description="discriminator base width")
    n_blocks: int = Field(6, ge=1, description="residual blocks in each generator")
    n_downsampling: int = Field(2, ge=1, le=4)
    d_layers: int = Field(3, ge=1, le=5, description="PatchGAN depth (3 = 70x70 at 256^2)")
    gan_loss: Literal["lsgan", "bce"] = "lsgan"
    lambda_cycle: float = Field(10.0, ge=0)
    lambda_identity: float = Field(
        0.5, ge=0, description="x lambda_cycle; only when input and output channels match"
    )
    pool_size: int = Field(50, ge=0, description="history of fakes shown to D (0 = off)")
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    decay_start: float = Field(0.5, ge=0, le=1, description="fraction of steps at constant LR")


class MAEConfig(Strict):
    """HF ViTMAEForPreTraining trained from scratch."""

    preset: Literal["micro", "tiny", "small", "base"] = "tiny"
    patch_size: int = Field(4, ge=1)
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    steps: int = Field(1500, ge=1, description="optimiser steps, equal for every condition")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(100, ge=0)


class GeneratorChoice(Strict):
    """Which generator makes the synthetic images of each modality's `real+gen` condition."""

    rgb: Literal["ddpm"] = "ddpm"
    thermal: Literal["cyclegan"] = "cyclegan"


class StudyConfig(Strict):
    modalities: list[Modality] = Field(["rgb", "thermal"], min_length=1)
    conditions: list[Condition] = Field(["real", "real+gen"], min_length=1)
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    n_synthetic: int = Field(200, ge=1, description="synthetic images added in real+gen")
    generators: GeneratorChoice = GeneratorChoice()


class EvalConfig(Strict):
    seed: int = Field(1234, description="derives the fixed mask of every test image")
    batch_size: int = Field(64, ge=1)
    n_examples: int = Field(6, ge=1, description="test images shown reconstructed in the report")


class RuntimeConfig(Strict):
    """Where and how fast; never part of a stage key."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="CPU threads (0 = all cores)")
    log_every: int = Field(25, ge=1, description="optimiser steps between logged losses")


class Config(Strict):
    seed: int = Field(0, description="seeds data selection and generator training")
    data: DataConfig = DataConfig()
    ddpm: DDPMConfig = DDPMConfig()
    cyclegan: CycleGANConfig = CycleGANConfig()
    mae: MAEConfig = MAEConfig()
    study: StudyConfig = StudyConfig()
    eval: EvalConfig = EvalConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _sizes_fit(self) -> Config:
        d = self.data
        needed = d.n_pool + d.n_train + d.n_test
        if d.source == "scenes" and needed > d.scenes.n_frames:
            raise ValueError(
                f"data.n_pool + data.n_train + data.n_test = {needed} is larger than the source "
                f"(data.scenes.n_frames = {d.scenes.n_frames}); lower them or raise n_frames"
            )
        if d.image_size % self.mae.patch_size:
            raise ValueError(
                f"mae.patch_size = {self.mae.patch_size} does not divide data.image_size = "
                f"{d.image_size}; choose sizes where it does"
            )
        if "real+gen" in self.study.conditions and "thermal" in self.study.modalities:
            if self.study.n_synthetic > d.n_pool:
                raise ValueError(
                    f"study.n_synthetic = {self.study.n_synthetic} thermal images are translated "
                    f"from distinct pool frames, but data.n_pool = {d.n_pool}; lower one or raise the other"
                )
        if len(set(self.study.seeds)) != len(self.study.seeds):
            raise ValueError(f"study.seeds = {self.study.seeds} repeats a seed; list distinct seeds")
        return self


# ---------------------------------------------------------------------------------------------- loading

QUICKSTART = "quickstart"


def builtin_config_text(name: str = QUICKSTART) -> str:
    return resources.files("genaug").joinpath("configs", f"{name}.toml").read_text()


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read `path` (None = the built-in quickstart), apply `--set key=value` overrides, validate."""
    if path is None:
        origin, text = "built-in quickstart config", builtin_config_text()
    else:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise UserError(f"{path}: no such config file; give the path of a TOML file")
        text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{origin}: not valid TOML ({e}); fix the file") from None
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, origin)


def apply_override(raw: dict, item: str) -> None:
    """`a.b=value`: value is read as a TOML value (1, 0.5, true, [1, 2], "x"), else as a string."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {item!r}: expected key=value, e.g. --set mae.steps=200")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {item!r}: '{'.'.join(parts[: i + 1])}' is a value, not a table")
        node = child
    node[parts[-1]] = parsed


def validate(raw: dict, origin: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{origin}: {describe_error(e)}") from None


def describe_error(e: ValidationError) -> str:
    errors = e.errors()
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        hint = _closest_key(loc)
        hint = f"; did you mean '{hint}'?" if hint else "; remove it"
        return f"unknown key '{key}'{hint}{more}"
    if not loc:  # a cross-key check: its message names the keys itself
        return first["msg"].removeprefix("Value error, ") + more
    value = first.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a table"
    return f"key '{key}' = {shown}: {first['msg']}{more}"


def _closest_key(loc: list[str]) -> str | None:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    match = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return ".".join([*loc[:-1], match[0]]) if match else None


# ---------------------------------------------------------------------------------------------- output


def to_toml(cfg: Config) -> str:
    import tomli_w

    header = "# Resolved genaug config: every default written out. `genaug run THIS_FILE` repeats the study.\n"
    return header + tomli_w.dumps(cfg.model_dump(mode="json"))


def stage_key(*parts: Any) -> str:
    """A short stable hash of what a stage's output depends on (config slices and input keys)."""
    blob = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"cannot hash {type(obj).__name__}")
