"""The study's typed configuration: TOML in, validated models out, every default written back.

A config file is a short diff over the defaults below (see `configs/quickstart.toml`). Loading
validates everything before anything is built: an unknown key is rejected with its full path and the
closest valid key, a wrong type or an out-of-range value with the key and the value, and cross-key
constraints (sizes that must fit together) with every key involved.

Stage keys (study/plan.py) hash the config slice each stage's files depend on. `runtime` says *where*
and *how fast* to compute and stays out of them, except for what changes a training stage's files: the
precision it trains in (the resolved decision, not the setting) and `log_every` (its logged losses are
means over that many steps). `slurm`, `eval.batch_size` and `eval.paper_epochs_dropped` (a report-only
cut) enter no key. README, "What retrains what".
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genaug.errors import UserError
from genaug.generators.registry import parse as parse_generator
from genaug.study.conditions import NAMES as CONDITION_NAMES

Modality = Literal["rgb", "thermal"]
# What each condition adds and how it seeds: genaug.study.conditions.CONDITIONS.
Condition = Literal[CONDITION_NAMES]


class Strict(BaseModel):
    # strict: `steps = true` or `attention = "yes"` is an error, not a silent 1 or True; nan and inf are
    # never a setting (lr = inf would only fail inside a stage)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


Seed = Annotated[int, Field(ge=0, lt=2**31)]


class ScenesConfig(Strict):
    """The built-in procedural street scenes (`genaug.data.scenes`)."""

    width: int = Field(160, ge=32, le=4096, description="canvas width in pixels (KAIST: 640)")
    height: int = Field(128, ge=32, le=4096, description="canvas height in pixels (KAIST: 512)")
    n_frames: int = Field(2000, ge=1, description="how many frames the source holds")
    night_fraction: float = Field(0.3, ge=0.0, le=1.0)


class KaistConfig(Strict):
    """The KAIST multispectral pedestrian layout: images/setXX/VYYY/{visible,lwir}/I#####.jpg."""

    root: str = Field("", description="folder holding images/ (and imageSets/ for split files)")
    train_split: str = Field("", description="split file the pool and MAE sets are drawn from, e.g. "
                             "train-all-02.txt (a name in root/imageSets or a path); empty = every frame")
    test_split: str = Field("", description="split file the test set is drawn from, e.g. test-all-20.txt; "
                            "empty = drawn from the same frames as the training sets")
    sets: list[str] = Field([], description='only these sets, e.g. ["set00", "set03"]; empty = all')
    videos: list[str] = Field([], description='only these videos, e.g. ["set00/V000"]; empty = all')
    time: Literal["all", "day", "night"] = Field("all", description="day: set00-02, 06-08; night: 03-05, 09-11")
    stride: int = Field(1, ge=1, description="keep every stride-th frame of each video")


class FolderConfig(Strict):
    """Your own images: one folder per modality, pairs matched by file stem."""

    rgb: str = Field("", description="folder of RGB images (jpg, png, tif, bmp); empty = no RGB")
    thermal: str = Field("", description="folder of thermal images, 8- or 16-bit; empty = no thermal")
    thermal_16bit: Literal["full", "minmax"] = Field(
        "full", description="16-bit thermal to [0, 1]: full = divide by 65535; minmax = per image"
    )


class DataConfig(Strict):
    source: Literal["scenes", "kaist", "folder"] = "scenes"
    scenes: ScenesConfig = ScenesConfig()
    kaist: KaistConfig = KaistConfig()
    folder: FolderConfig = FolderConfig()
    image_size: int = Field(32, ge=8, le=1024, description="square side every model sees")
    resize: Literal["crop", "squash", "pad"] = Field(
        "crop", description="crop: aspect-preserving centre crop; squash: the seed's distortion; "
        "pad: aspect-preserving, black borders"
    )
    thermal_channels: Literal[1, 3] = Field(
        1, description="1: one-channel thermal models; 3: the channel repeated (3-channel pretrained weights)"
    )
    missing: Literal["error", "skip"] = Field(
        "error", description="a frame whose partner image is missing: stop, or skip it and count it"
    )
    n_pool: int = Field(600, ge=1, description="generator-training frames, in no MAE set")
    n_train: int = Field(200, ge=1, description="real frames each MAE trains on")
    n_test: int = Field(100, ge=1, description="held-out real frames every MAE is evaluated on")


class AugmentConfig(Strict):
    """Training-time augmentation, applied to whole batches on the training device (kornia)."""

    hflip: bool = Field(True, description="random horizontal flips")
    crop_scale: list[float] = Field([1.0, 1.0], min_length=2, max_length=2,
                                    description="random resized crop, area range; [1.0, 1.0] = off")

    @model_validator(mode="after")
    def _range(self) -> AugmentConfig:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale = {self.crop_scale}: need 0 < low <= high <= 1, e.g. [0.5, 1.0]")
        return self


# A preset fills every DDPM key the config leaves out; keys you set win. `small` is the field defaults.
DDPM_PRESETS: dict[str, dict[str, Any]] = {
    "small": {},  # 1.8 M parameters, 32^2: a few minutes on 2 CPU cores
    "tiny": {  # the quickstart's: 0.7 M parameters, about a minute on 2 CPU cores
        "block_out_channels": [16, 32, 64],
        "prediction_type": "sample",  # x0: blurry but structured after a few hundred steps, where
        "beta_schedule": "linear",    # epsilon-prediction still samples noise
        "steps": 300, "lr": 2e-3, "warmup_steps": 30,
    },
    "paper": {  # the seed's UNet and recipe (113.7 M parameters, 128^2), as its notebook trained it
        "block_out_channels": [128, 128, 256, 256, 512, 512], "layers_per_block": 2,
        "attention_levels": [4],  # Down x4, AttnDown, Down / Up, AttnUp, Up x4
        "image_size": 128, "train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon",
        "lr": 1e-4, "warmup_steps": 500, "batch_size": 16, "epochs": 50,
    },
}


class DDPMConfig(Strict):
    """A diffusers UNet2DModel + DDPMScheduler with EMA, sampled with a few-step solver."""

    preset: Literal["small", "tiny", "paper"] = Field(
        "small", description="fills every ddpm key left out: tiny, small (CPU minutes), paper (the seed's)")
    block_out_channels: list[Annotated[int, Field(ge=1)]] = Field([32, 64, 128], min_length=2,
                                                                  description="UNet width per level")
    layers_per_block: int = Field(1, ge=1, le=4)
    attention_levels: list[int] = Field(
        [-1], description="levels with self-attention: 0 = full resolution, -1 = the lowest; [] = none")
    image_size: int = Field(0, ge=0, description="training and sampling side; 0 = data.image_size. Samples "
                            "are resized to data.image_size (bicubic, antialiased) and the manifest says so")
    train_timesteps: int = Field(1000, ge=10)
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = Field(
        "epsilon", description="what the UNet predicts; 'sample' (x0) gives structure sooner on tiny budgets"
    )
    steps: int = Field(3000, ge=1, description="optimiser steps (ignored when epochs > 0)")
    epochs: int = Field(0, ge=0, description="> 0: train for this many passes over the pool instead of steps")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, gt=0, description="max gradient norm (diffusers' example: 1.0)")
    ema: bool = Field(True, description="sample with an exponential moving average of the weights "
                      "(raw weights are kept beside it)")
    ema_max_decay: float = Field(0.9999, gt=0, lt=1)
    ema_power: float = Field(0.75, gt=0, description="EMA warm-up: decay = 1 - (1 + step)^-power, capped")
    sampler: Literal["dpmsolver++", "ddim", "ddpm"] = "dpmsolver++"
    sample_steps: int = Field(20, ge=1, le=1000)
    sample_batch_size: int = Field(64, ge=1)
    augment: AugmentConfig = AugmentConfig()

    def total_steps(self, n_images: int) -> int:
        """Optimiser steps: `steps`, or `epochs` passes over `n_images` when epochs > 0."""
        return -(-self.epochs * n_images // self.batch_size) if self.epochs else self.steps

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("preset"), str) and data["preset"] in DDPM_PRESETS:
            data = {**DDPM_PRESETS[data["preset"]], **data}
        return data


class TranslatorConfig(Strict):
    """What the RGB -> thermal GANs share: widths, PatchGAN depth, Adam and the junyanz LR policy."""

    ngf: int = Field(32, ge=4, description="generator base width")
    ndf: int = Field(32, ge=4, description="discriminator base width")
    d_layers: int = Field(3, ge=1, le=5, description="PatchGAN depth (3 = 70x70 at 256^2)")
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    decay_start: float = Field(0.5, ge=0, le=1, description="fraction of steps at constant LR")
    augment: AugmentConfig = AugmentConfig()


class CycleGANConfig(TranslatorConfig):
    """RGB -> thermal CycleGAN (Zhu et al. 2017) with junyanz defaults, scaled down for the CPU."""

    generator: Literal["resnet", "unet"] = Field(
        "resnet", description="resnet: junyanz default (n_blocks 9 = resnet_9blocks); unet: the seed's "
        "(num_downs 8 at 256^2)")
    n_blocks: int = Field(6, ge=1, description="resnet: residual blocks in each generator")
    n_downsampling: int = Field(2, ge=1, le=4, description="resnet: stride-2 convs before the blocks")
    num_downs: int = Field(5, ge=2, le=8, description="unet: halvings (8 = unet_256 at 256^2)")
    gan_loss: Literal["lsgan", "bce"] = "lsgan"
    lambda_cycle: float = Field(10.0, ge=0)
    lambda_identity: float = Field(
        0.5, ge=0, description="x lambda_cycle; only when input and output channels match"
    )
    pool_size: int = Field(50, ge=0, description="history of fakes shown to D (0 = off)")


class Pix2PixConfig(TranslatorConfig):
    """Paired RGB -> thermal pix2pix (Isola et al. 2017): U-Net generator, conditional PatchGAN."""

    num_downs: int = Field(5, ge=2, le=8, description="U-Net halvings (8 = unet_256 at 256^2)")
    gan_loss: Literal["bce", "lsgan"] = Field("bce", description="bce: the paper's vanilla GAN loss")
    lambda_l1: float = Field(100.0, ge=0)


class VitTranslatorConfig(Strict):
    """The seed's ViT translator, kept as a baseline row: a HF ViTModel encoder + a conv decoder, MSE loss."""

    init: str = Field("auto", description="auto: google/vit-base-patch16-224 when it is on this machine, "
                      "else scratch; scratch; or a hub id / local folder of a ViT checkpoint")
    patch_size: int = Field(4, ge=1, description="scratch encoder's patch side (pretrained: its own)")
    hidden_size: int = Field(128, ge=8, description="scratch encoder width")
    layers: int = Field(4, ge=1, description="scratch encoder depth")
    heads: int = Field(4, ge=1, description="scratch encoder attention heads; must divide hidden_size")
    decoder_channels: int = Field(64, ge=4, description="width of the first decoder stage (halved per upsampling)")
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-4, gt=0, description="Adam, as the seed")
    augment: AugmentConfig = AugmentConfig()


class MAEConfig(Strict):
    """HF ViTMAEForPreTraining, from scratch or from pretrained weights."""

    init: str = Field("scratch", description="scratch (the preset's architecture), or pretrained weights: "
                      "a hub id such as facebook/vit-mae-base (must be on this machine) or a local folder")
    norm_pix_loss: bool = Field(False, description="train on per-patch normalised pixel targets (MAE paper); "
                                "applied to scratch and pretrained models alike")
    preset: Literal["micro", "tiny", "small", "base"] = Field("tiny", description="scratch architecture "
                                                              "(ignored for pretrained weights)")
    patch_size: int = Field(4, ge=1, description="scratch patch side (pretrained: the model's own)")
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    steps: int = Field(1500, ge=1, description="optimiser steps, equal for every condition "
                       "(study.budget = 'steps')")
    epochs: int = Field(50, ge=1, description="passes over each condition's images (study.budget = 'epochs')")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    schedule: Literal["cosine", "constant"] = Field("cosine", description="after the warm-up: cosine decay to "
                                                    "zero (MAE's), or constant (the seed paper's)")
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm (0 = no clipping): without it some "
                             "seeds of a short, fast schedule stall or diverge (README, 'Run health')")
    augment: AugmentConfig = AugmentConfig()


class GeneratorChoice(Strict):
    """Which generators make each modality's synthetic images: each gives its own real+gen:<name> condition.
    The entries and what each means: genaug.generators.registry (ddpm, cyclegan, pix2pix, vit_translator,
    folder:<path>, pipeline:<path or hub id>, <rgb entry>><translator>)."""

    rgb: list[str] = Field(["ddpm"], min_length=1, description="ddpm; folder:<path> (your own images); "
                           "pipeline:<path or hub id> (an unconditional diffusers pipeline on this machine)")
    thermal: list[str] = Field(
        ["cyclegan"], min_length=1, description="cyclegan: unpaired; pix2pix: aligned pairs; vit_translator: "
        "the seed's baseline; ddpm: thermal sampled directly; ddpm>X: DDPM's RGB samples translated by X; "
        "folder:<path>; pipeline:<path or hub id>")

    @model_validator(mode="after")
    def _known(self) -> GeneratorChoice:
        for modality in ("rgb", "thermal"):
            entries = [parse_generator(text, modality) for text in getattr(self, modality)]
            names = [e.name for e in entries]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"study.generators.{modality}: two entries are named '{twice[0]}' (the condition "
                                 f"real+gen:{twice[0]}); list each once, or rename one folder")
        return self

    def entries(self, modality: str):
        """-> [registry.Entry] of study.generators.<modality>, parsed."""
        return [parse_generator(text, modality) for text in getattr(self, modality)]

    def entry(self, modality: str, name: str):
        """The entry of study.generators.<modality> whose condition is real+gen:<name>; a chain's source is
        looked up among the RGB entries it was parsed from."""
        for entry in self.entries(modality) + [e.source for e in self.entries("thermal") if e.source]:
            if entry.name == name and entry.modality == modality:
                return entry
        raise KeyError(f"study.generators.{modality} has no generator named {name}")


class StudyConfig(Strict):
    modalities: list[Modality] = Field(["rgb", "thermal"], min_length=1)
    conditions: list[Condition] = Field(["real", "real+gen"], min_length=1)
    seeds: list[Seed] = Field([0, 1, 2], min_length=1)
    n_synthetic: int = Field(200, ge=1, description="images added in real+gen (and in real-x2, real+classic, "
                             "real+real)")
    ratios: list[Annotated[float, Field(gt=0)]] = Field(
        [], description="ratio sweep: extra:real ratios, e.g. [0.5, 1, 2, 4]; every condition that adds images "
        "is also trained with round(ratio x data.n_train) of them, as <condition>@<ratio> (ratio 0 is real)")
    budget: Literal["steps", "epochs"] = Field(
        "steps", description="steps: every condition trains mae.steps steps (more images, not more steps); "
        "epochs: mae.epochs passes (the seed's protocol: conditions with more images train longer)")
    generators: GeneratorChoice = GeneratorChoice()
    on_unhealthy: Literal["flag", "stop"] = Field(
        "flag", description="a run flagged by the health rules (diverged, stalled, outlier, near floor): flag = "
        "name it beside the verdicts, which still stand; stop = no verdict anywhere in the study")
    target_effect: float = Field(0.05, gt=0, lt=1, description="the relative change the sensitivity line "
                                 "counts seeds for (0.05 = 5 %)")


class QualityConfig(Strict):
    """How every synthetic set is scored against held-out real images (FD, KID)."""

    feature_space: str = Field(
        "random-conv", description="random-conv: genaug's seeded random conv features (same on every "
        "machine); or a hub id / local folder of a transformers image model (e.g. facebook/dinov2-small), "
        "which must be on this machine. Inception is not offered: its packages need torchvision")
    kid_subset_size: int = Field(50, ge=2, description="KID subset size (capped at the set sizes)")


class EvalConfig(Strict):
    seed: Seed = Field(1234, description="derives the fixed mask of every test image")
    batch_size: int = Field(0, ge=0, description="test images per forward pass (0 = 64 on the CPU, 512 on CUDA)")
    n_examples: int = Field(6, ge=1, description="test images shown reconstructed in the report")
    paper_epochs_dropped: int = Field(1, ge=0, description="the seed paper's own statistic (its own report "
                                      "table): epochs dropped from the start of every run, one cut for all")


class RuntimeConfig(Strict):
    """Where and how fast. Not part of stage keys, but for `precision` (each training stage's resolved
    decision) and `log_every` (the interval its logged losses average over)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="CPU threads (0 = all cores)")
    log_every: int = Field(25, ge=1, description="optimiser steps between logged losses")
    checkpoint_every: int = Field(500, ge=0, description="optimiser steps between resumable checkpoints "
                                  "(0 = none); a re-run resumes a stage from its latest one")
    checkpoints_total_limit: int = Field(2, ge=1, description="checkpoints kept per stage; older ones deleted")
    on_nonfinite: Literal["stop", "rollback"] = Field(
        "stop", description="a non-finite training loss: stop and name the last good checkpoint, or go back to "
        "that checkpoint once with every learning rate halved (what GAN practice does by hand)")
    # torch.compile costs a minute or more the first time a network's graph is built (seconds when
    # inductor's cache already has it) and saves 20-40 % of every step after: on the CPU and in short
    # runs it does not repay itself.
    compile: Literal["auto", "on", "off"] = Field("auto", description="torch.compile the MAE and the DDPM "
                                                  "UNet: auto = on CUDA for stages of at least compile_min_steps")
    compile_min_steps: int = Field(500, ge=1, description="the shortest stage 'auto' compiles")
    # At small batches (the seed paper's 16) a compiled step is host-bound: launching kernels takes
    # longer than running them. CUDA graphs ("reduce-overhead") replay a whole step in one launch.
    # auto's rule and the figures it rests on: `engine.Trainer.compile_mode_decision`.
    compile_mode: Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "auto", description="torch.compile's mode for compiled stages: auto = reduce-overhead (CUDA graphs) on "
        "CUDA for a per-process batch of at most 64 in one process, else default")
    # One eager batch-16 MAE process leaves an H200 mostly idle: 4 side by side gave 3.6x one process's
    # images/s, 8 gave 4.6x (measured for issue 15); 4 takes most of the gain at half the memory and threads.
    processes_per_gpu: int = Field(4, ge=1, description="on CUDA, `genaug run` without --launcher runs this many "
                                   "steps at once per visible GPU, each a local job (see --launcher)")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="training arithmetic: auto = bf16 autocast on CUDA; on the CPU, bf16 for the DDPM "
        "where the CPU has bf16 arithmetic (its convolutions gain), fp32 for the rest")
    resident_data: Literal["auto", "on", "off"] = Field(
        "auto", description="keep each training set in the training device's memory (auto: when it takes at "
        "most a quarter of the free device memory); off: host memory, each batch copied over")
    memory_check: bool = Field(True, description="on the CPU, refuse a stage whose estimated peak memory exceeds "
                               "the memory available (MemAvailable, within the cgroup's limit) before it starts; "
                               "false: run it anyway (swap, or an estimate you know to be high)")
    # accelerate's trackers (genaug.tracking.TRACKERS); changes no result, so it enters no stage key
    log_with: Literal["none", "tensorboard", "wandb", "trackio", "comet_ml", "aim", "mlflow", "clearml", "dvclive",
                      "swanlab"] = Field(
        "none", description="also send every training stage's logged losses and learning rates to this tracker, "
        "one run per stage folder (TensorBoard: RUN_DIR/tracking, `tensorboard --logdir RUN_DIR/tracking`); "
        "none = only the stages' log.jsonl")

    @field_validator("log_with")
    @classmethod
    def _tracker_installed(cls, name: str) -> str:
        """A tracker that is not installed fails here, before any stage runs, not at the first training stage."""
        from pydantic_core import PydanticCustomError

        from genaug.tracking import missing

        problem = missing(name)
        if problem:
            raise PydanticCustomError("tracker_missing", problem)
        return name


class SlurmConfig(Strict):
    """What each job asks SLURM for under `genaug run --launcher slurm` (never part of a stage key)."""

    partition: str = Field("", description="SLURM partition ('' = the cluster's default)")
    gpus_per_job: int = Field(1, ge=0)
    cpus_per_job: int = Field(8, ge=1)
    mem_gb: int = Field(32, ge=1)
    time_min: int = Field(240, ge=1, description="wall-clock limit of one job (one stage output)")


class ProbeConfig(Strict):
    """Linear and kNN probes of every MAE's frozen encoder on labels the data source provides: do the
    synthetic images make the representation better, not only the reconstructions?"""

    tasks: list[str] = Field(["default"], description="label tasks to probe: default = the source's own "
                             "(scenes and KAIST: person present; folder: probe.labels' label column), or task "
                             "names (scenes: person, car, cars, night); [] = no probe")
    kaist_min_height: int = Field(50, ge=1, description="KAIST: a frame shows a person when it has a 'person' box "
                                  "at least this many pixels tall (the benchmark's 'reasonable' setting)")
    labels: str = Field("", description="folder source: a CSV with columns image,label (image = file stem); "
                        "empty = no labels, no probe")
    knn_k: int = Field(20, ge=1, description="neighbours of the kNN probe (cosine similarity)")
    logistic_c: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic-regression probe")
    batch_size: int = Field(0, ge=0, description="images per forward pass for features (0 = 64 on the CPU, 512 "
                            "on CUDA)")


class Config(Strict):
    seed: Seed = Field(0, description="seeds the scenes' content, the split and generator training")
    data: DataConfig = DataConfig()
    ddpm: DDPMConfig = DDPMConfig()
    cyclegan: CycleGANConfig = CycleGANConfig()
    pix2pix: Pix2PixConfig = Pix2PixConfig()
    vit_translator: VitTranslatorConfig = VitTranslatorConfig()
    mae: MAEConfig = MAEConfig()
    study: StudyConfig = StudyConfig()
    quality: QualityConfig = QualityConfig()
    eval: EvalConfig = EvalConfig()
    probe: ProbeConfig = ProbeConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    slurm: SlurmConfig = SlurmConfig()

    @model_validator(mode="after")
    def _fits_together(self) -> Config:
        """Cross-key checks: every combination that would only fail later, inside a stage."""
        d, study = self.data, self.study
        needed = d.n_pool + d.n_train + d.n_test
        if d.source == "scenes" and needed > d.scenes.n_frames:
            raise ValueError(
                f"data.n_pool + data.n_train + data.n_test = {needed} is larger than the source "
                f"(data.scenes.n_frames = {d.scenes.n_frames}); lower them or raise n_frames"
            )
        if self.mae.init == "scratch" and d.image_size % self.mae.patch_size:  # pretrained: genaug.mae checks
            raise ValueError(f"mae.patch_size = {self.mae.patch_size} does not divide data.image_size = "
                             f"{d.image_size}; choose sizes where it does")
        for key, values in (("study.modalities", study.modalities), ("study.conditions", study.conditions),
                            ("study.seeds", study.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{key} = {values} repeats an entry; list each once")
        if len(set(study.ratios)) != len(study.ratios):
            raise ValueError(f"study.ratios = {study.ratios} repeats an entry; list each once")
        extra = _rounded_product(max(study.ratios), d.n_train) if study.ratios else 0
        if extra > study.n_synthetic:
            raise ValueError(f"study.ratios up to {max(study.ratios)} need round({max(study.ratios)} x data.n_train) = "
                             f"{extra} extra images, but study.n_synthetic = "
                             f"{study.n_synthetic} are made; raise n_synthetic or lower the ratios")
        others = [c for c in study.conditions if c != "real"]
        if others and "real" not in study.conditions:
            raise ValueError(f"study.conditions has {others[0]} without real: every condition is compared "
                             "with real, so list it too")
        if "real+real" in study.conditions and study.n_synthetic > d.n_pool:
            raise ValueError(f"study.n_synthetic = {study.n_synthetic} held-back real frames for real+real come "
                             f"from the generator pool, but data.n_pool = {d.n_pool}; lower one or raise the other")
        if "real+gen" in study.conditions:
            for modality in study.modalities:
                for entry in study.generators.entries(modality):
                    if entry.spec.how == "translates" and entry.source is None and study.n_synthetic > d.n_pool:
                        raise ValueError(
                            f"study.n_synthetic = {study.n_synthetic} thermal images are translated from "
                            f"distinct pool frames by {entry.name}, but data.n_pool = {d.n_pool}; lower one or "
                            "raise the other")
                    for part in entry.parts():
                        if part.spec.trains:
                            _check_generator(self, part.spec.name)
        return self


def _rounded_product(ratio: float, n: int) -> float:
    """round(ratio x n), or inf where that is beyond a float (a huge ratio or n_train): never OverflowError."""
    try:
        return round(ratio * n)
    except OverflowError:
        return float("inf")


def _check_generator(cfg: Config, name: str) -> None:
    size = cfg.data.image_size
    if name == "ddpm":
        ddpm = cfg.ddpm
        size = ddpm.image_size or size
        groups = min(32, ddpm.block_out_channels[0])
        if any(c % groups for c in ddpm.block_out_channels):
            raise ValueError(f"ddpm.block_out_channels = {ddpm.block_out_channels}: each width must be a "
                             f"multiple of {groups} (the group-norm size); e.g. [32, 64, 128]")
        levels = len(ddpm.block_out_channels)
        if any(not -levels <= level < levels for level in ddpm.attention_levels):
            raise ValueError(f"ddpm.attention_levels = {ddpm.attention_levels}: levels run from 0 to "
                             f"{levels - 1} (or -1 for the lowest) with {levels} block_out_channels")
        if size % 2 ** (levels - 1):
            raise ValueError(f"the DDPM's side {size} cannot be halved {levels - 1} times by "
                             f"ddpm.block_out_channels (one halving per extra level); use fewer levels "
                             "or another ddpm.image_size")
        if ddpm.sample_steps > ddpm.train_timesteps:
            raise ValueError(f"ddpm.sample_steps = {ddpm.sample_steps} is more than ddpm.train_timesteps = "
                             f"{ddpm.train_timesteps}; lower it")
        if ddpm.sampler == "dpmsolver++" and ddpm.sample_steps >= ddpm.train_timesteps:
            # diffusers' multistep solver indexes one step past the schedule at T steps of T
            raise ValueError(f"ddpm.sample_steps = {ddpm.sample_steps} with dpmsolver++ needs fewer than "
                             f"ddpm.train_timesteps = {ddpm.train_timesteps} steps; lower it (20 is plenty)")
    elif name in ("cyclegan", "pix2pix"):
        gan = getattr(cfg, name)
        unet = name == "pix2pix" or gan.generator == "unet"
        halvings, key = (gan.num_downs, "num_downs") if unet else (gan.n_downsampling, "n_downsampling")
        if size % 2**halvings:
            raise ValueError(f"data.image_size = {size} cannot be halved {name}.{key} = {halvings} times; "
                             f"lower {key}")
        if size // 2**gan.d_layers < 3:
            raise ValueError(f"{name}.d_layers = {gan.d_layers} is too deep for data.image_size = {size} "
                             f"(needs image_size >= {3 * 2**gan.d_layers}); lower d_layers")
    elif name == "vit_translator":
        vit = cfg.vit_translator
        if vit.init in ("scratch", "auto"):  # auto falls back to a scratch encoder when nothing is cached
            if vit.patch_size & (vit.patch_size - 1):
                raise ValueError(f"vit_translator.patch_size = {vit.patch_size}: the decoder doubles the side "
                                 "per stage, so it must be a power of two (e.g. 4, 8 or 16)")
            if size % vit.patch_size:
                raise ValueError(f"vit_translator.patch_size = {vit.patch_size} does not divide data.image_size = "
                                 f"{size}; choose sizes where it does")
        if vit.hidden_size % vit.heads:
            raise ValueError(f"vit_translator.heads = {vit.heads} does not divide vit_translator.hidden_size = "
                             f"{vit.hidden_size}; choose values where it does")


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
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read it as a UTF-8 text file ({e.__class__.__name__}); "
                            "give a TOML config") from None
    try:
        raw = tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer too long to convert
        raise UserError(f"{origin}: not valid TOML ({e}); fix the file") from None
    except RecursionError:
        raise UserError(f"{origin}: not valid TOML (arrays or tables nested too deeply); fix the file") from None
    set_keys = [apply_override(raw, item) for item in overrides]
    return validate(raw, origin, set_keys)


def apply_override(raw: dict, item: str) -> str:
    """`a.b=value`: value is read as a TOML value (1, 0.5, true, [1, 2], "x"), else as a string. -> key"""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {item!r}: expected key=value, e.g. --set mae.steps=200")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except (ValueError, RecursionError):  # TOMLDecodeError, an integer too long, nesting too deep
        parsed = value.strip()
        if parsed[:1] in ("[", "{", '"', "'"):  # meant as a TOML list, table or string, but broken
            raise UserError(f"--set {item!r}: {parsed!r} is not a valid TOML value (unclosed?); fix it, "
                            "e.g. --set 'study.seeds=[0, 1]'") from None
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {item!r}: {'.'.join(parts[: i + 1])!r} is a value, not a table")
        node = child
    node[parts[-1]] = parsed
    return key


def validate(raw: dict, origin: str = "config", set_keys: list[str] = ()) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        key = ".".join(str(p) for p in e.errors()[0]["loc"])
        if key and any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in set_keys):
            origin = "--set"  # the file never had this value: blame what did
        elif set_keys:
            origin += " with its --set overrides"
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
        return f"unknown key {key!r}{hint}{more}"
    if not loc:  # a cross-key check: its message names the keys itself
        return first["msg"].removeprefix("Value error, ") + more
    value = first.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a table"
    return f"key '{key}' = {shown}: {first['msg']}{more}"


def _closest_key(loc: list[str]) -> str | None:
    """The valid key nearest to a misspelt one: same table first, then the same name anywhere."""
    table = ".".join(loc[:-1])
    siblings = [k for k in _all_keys() if k.rpartition(".")[0] == table]
    match = difflib.get_close_matches(".".join(loc), siblings, n=1, cutoff=0.6)
    if match:
        return match[0]
    elsewhere = [k for k in _all_keys() if k.rpartition(".")[2] == loc[-1]]
    return elsewhere[0] if elsewhere else None


def _all_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += _all_keys(field.annotation, f"{prefix}{name}.")
    return keys


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
