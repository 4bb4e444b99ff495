"""The study's stages. Each reads completed input folders and fills one new folder; nothing else.

    split     source -> frames.safetensors (uint8 pool / train / test sets) + split.json (ids)
    ddpm      split.pool.rgb -> pipeline/ (EMA), unet_raw/ (diffusers) + images/*.png (synthetic RGB)
    cyclegan  split.pool rgb, thermal (unpaired) -> model/ (safetensors) + images/*.png (synthetic thermal)
    pix2pix, vit_translator   the same from aligned pool pairs
    chain     a generator's images + a translator -> images/*.png (e.g. DDPM RGB -> thermal)
    mae       split.train.<modality> [+ a synthetic set] -> model/ (save_pretrained) + log.jsonl
    eval      split.test.<modality> + an MAE (or the mean predictor) -> per_image.csv + examples.safetensors
    probe     split.train/test.<modality> + labels + an MAE's encoder (or a floor's) -> per_image.csv
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from genaug import distributed
from genaug.config import Config
from genaug.data.images import RESAMPLE_POLICY, from_unit, resize_square, to_unit, write_png_folder
from genaug.data.frames import Frames
from genaug.data.sources import open_source
from genaug.engine import Trainer, resolve_device
from genaug.errors import UserError
from genaug.generators.registry import GENERATORS
from genaug.study.conditions import spec_of
from genaug.study.outputs import load_split, load_synthetic



@dataclass
class Context:
    cfg: Config
    out: Path  # the (temporary) folder this stage fills
    inputs: dict[str, Path]  # role -> completed input folder
    params: dict  # modality, condition, seed, ... of this step
    manifest: dict  # extra facts for manifest.json
    trainer: Callable[[int, str], Trainer]  # (steps, log file name) -> Trainer with progress attached
    advance: Callable[[int], None]  # absolute progress for work beyond training (frames, images)
    note: Callable[[str], None] = print
    device: str = field(init=False)

    def __post_init__(self):
        self.device = resolve_device(self.cfg.runtime)


# ------------------------------------------------------------------------------------------------ split


def run_split(ctx: Context) -> None:
    from safetensors.torch import save_file

    from genaug.data.cache import load_cached
    from genaug.data.labels import LabelReader, balance
    from genaug.data.selection import select

    data, seed = ctx.cfg.data, ctx.cfg.seed
    source = open_source(data, seed)
    selection = select(ctx.cfg, source)
    reader = LabelReader(source, data, ctx.cfg.probe)
    reader.check([ref for refs in selection.sets.values() for ref in refs])  # before any pixel is decoded
    tensors, ids, night, labels, names, done, cached = {}, {}, {}, {}, {}, 0, []
    for name, refs in selection.sets.items():
        frames, hit = load_cached(source, refs, data, seed, selection.modalities, labels=reader)
        for modality in selection.modalities:
            tensors[f"{name}.{modality}"] = frames.modality(modality)
        ids[name], night[name], labels[name] = frames.ids, frames.night, frames.labels
        assert not names or names == frames.label_names, "every set's labels must name the same classes"
        names = frames.label_names
        cached += [name] if hit else []
        done += len(refs)
        ctx.advance(done)
    save_file(tensors, ctx.out / "frames.safetensors")
    (ctx.out / "split.json").write_text(json.dumps({"ids": ids, "night": night, "labels": labels,
                                                    "label_names": names}, indent=1) + "\n")
    label_facts = {"tasks": reader.tasks, "names": names, "notes": reader.notes(),
                   "balance": {task: {name: balance(labels[name][task], names[task]) for name in labels}
                               for task in reader.tasks}}
    ctx.manifest.update(selection.summary(), decoded_from_cache=cached, resize=data.resize,
                        image_size=data.image_size, thermal_channels=data.thermal_channels, labels=label_facts)


# ------------------------------------------------------------------------------------------- generators


def run_ddpm(ctx: Context) -> None:
    """An unconditional DDPM trained on the pool's frames of the step's modality, then sampled."""
    from genaug.generators import ddpm

    cfg, n, size, modality = ctx.cfg.ddpm, ctx.cfg.study.n_synthetic, ctx.cfg.data.image_size, ctx.params["modality"]
    split = load_split(ctx.inputs["split"])
    steps = ctx.params["steps"]  # the plan's count: ddpm.steps, or ddpm.epochs over the pool
    pool = split["pool"].modality(modality)
    if modality == "thermal":  # one channel, repeated in the frames (data.thermal_channels): learn the one
        pool = pool[:, :1]
    unet, ema_unet, scheduler, _ = ddpm.train(cfg, pool, ctx.cfg.seed, ctx.trainer(steps, "log.jsonl"))
    ddpm.save(ctx.out, unet, scheduler, ema_unet)
    images = ddpm.sample(ctx.out / "pipeline", n, cfg.sampler, cfg.sample_steps, cfg.sample_batch_size,
                         ctx.cfg.seed, ctx.device, on_batch=lambda done: ctx.advance(steps + done),
                         compile_unet=ctx.cfg.runtime.compile)
    trained_at = images.shape[-1]
    facts = {"sampler": cfg.sampler, "sample_steps": cfg.sample_steps, "steps": steps,
             "weights": "ema" if ema_unet is not None else "raw", "sampled_at": trained_at,
             "sample_compile": ddpm.sampling_compile_decision(ctx.device, cfg.sample_steps, ctx.cfg.runtime.compile)[1]}
    if trained_at != size:  # the MAE sees data.image_size: resample, and say how
        images = resize_square(images, size)
        facts["resized_to"], facts["resize"] = size, RESAMPLE_POLICY
    write_synthetic(ctx, images, split, modality, ctx.params["generator"], facts)


def run_translator(ctx: Context) -> None:
    """An RGB -> thermal translator (CycleGAN unpaired; pix2pix and the ViT translator on aligned pool
    pairs: frame i's RGB and thermal) trained on the pool, then used on pool RGB frames."""
    from importlib import import_module

    name = ctx.params["generator"]
    spec, module, cfg = GENERATORS[name], import_module(f"genaug.generators.{name}"), getattr(ctx.cfg, name)
    split = load_split(ctx.inputs["split"])
    pool = split["pool"]
    nets, _ = module.train(cfg, pool.rgb, pool.thermal, ctx.cfg.seed, ctx.trainer(cfg.steps, "log.jsonl"),
                           log_note=ctx.note)
    module.save(ctx.out / "model", cfg, nets, pool.rgb.shape[1], pool.thermal.shape[1], *_data_facts(ctx))
    net = nets[spec.translating_net]
    if hasattr(net, "init_used"):  # the ViT translator: which encoder it started from
        ctx.manifest["init"] = net.init_used
    write_translated(ctx, net, split, name)


def run_folder(ctx: Context) -> None:
    """`folder:<path>`: synthetic images made anywhere, fitted to the study like the real frames."""
    from genaug.generators import external

    entry = ctx.cfg.study.generators.entry(ctx.params["modality"], ctx.params["generator"])
    split = load_split(ctx.inputs["split"])
    ids, images = external.read_folder(ctx.cfg, entry)
    ctx.advance(len(images))
    write_synthetic(ctx, images, split, entry.modality, entry.name,
                    {"folder": str(Path(entry.argument).expanduser().resolve()), "files": ids,
                     "resize": ctx.cfg.data.resize})


def run_pipeline(ctx: Context) -> None:
    """`pipeline:<path or hub id>`: an unconditional diffusers pipeline sampled with ddpm.sampler and
    ddpm.sample_steps at its native size (genaug's own DDPM sampler), then fitted like the real frames."""
    from genaug.generators import ddpm, external

    cfg = ctx.cfg.ddpm
    entry = ctx.cfg.study.generators.entry(ctx.params["modality"], ctx.params["generator"])
    split = load_split(ctx.inputs["split"])
    folder = external.pipeline_folder(entry)
    images = ddpm.sample(folder, ctx.cfg.study.n_synthetic, cfg.sampler, cfg.sample_steps, cfg.sample_batch_size,
                         ctx.cfg.seed, ctx.device, on_batch=ctx.advance, compile_unet=ctx.cfg.runtime.compile)
    facts = {"pipeline": str(folder), "sampler": cfg.sampler, "sample_steps": cfg.sample_steps,
             "sampled_at": images.shape[-1], "sampled_channels": images.shape[1]}
    fitted = external.fit_to_study(images, entry.modality, ctx.cfg.data)
    if fitted.shape[-1] != images.shape[-1]:
        facts["resized_to"], facts["resize"] = ctx.cfg.data.image_size, ctx.cfg.data.resize
    write_synthetic(ctx, fitted, split, entry.modality, entry.name, facts)


def _data_facts(ctx: Context) -> tuple[int, str]:
    """What a saved translator needs to be used on new files: its input side and resize policy."""
    return ctx.cfg.data.image_size, ctx.cfg.data.resize


def write_translated(ctx: Context, net: torch.nn.Module, split: dict[str, Frames], generator: str) -> None:
    """A translator's synthetic thermal set, and its quality on the held-out test pairs."""
    from genaug.analysis.quality import translator_quality
    from genaug.generators.networks import translate

    net.eval()
    n, pool = ctx.cfg.study.n_synthetic, split["pool"]
    ctx.manifest["paired_quality"] = translator_quality(net, split["test"].rgb, split["test"].thermal)
    # Thermal images for the MAE come from pool RGB frames: never from a frame of any MAE set.
    images = translate(net, pool.rgb[:n])
    ctx.advance(getattr(ctx.cfg, generator).steps + n)
    write_synthetic(ctx, images, split, "thermal", generator, {"translated_from": pool.ids[:n]})


def run_chain(ctx: Context) -> None:
    """A generator's synthetic RGB set translated to thermal: e.g. DDPM samples through the CycleGAN."""
    from genaug.generators.networks import translate
    from genaug.generators.translators import load_translator

    split = load_split(ctx.inputs["split"])
    rgb = load_synthetic(ctx.inputs["source"])
    net, _ = load_translator(ctx.inputs["translator"] / "model")  # saved with its translating network
    images = translate(net.to(ctx.device), rgb)
    ctx.advance(len(images))
    write_synthetic(ctx, images, split, "thermal", ctx.params["generator"],
                    {"translated_from": ctx.inputs["source"].name, "translator": ctx.inputs["translator"].name})


def write_synthetic(ctx: Context, images: torch.Tensor, split: dict[str, Frames], modality: str, generator: str,
                    extra: dict) -> None:
    """The synthetic set as PNGs, scored (FD, KID) against the held-out real test images of its modality,
    beside the same scores for as many real training frames: the value a perfect generator would get."""
    from genaug.analysis.fidelity import fidelity
    from genaug.data.frames import with_channels

    if modality == "thermal":  # the real frames' channel rule: one thermal channel, repeated to thermal_channels
        grey = images[:, :1] if images.shape[1] == 1 else images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
        images = with_channels(grey, ctx.cfg.data.thermal_channels)
    q = ctx.cfg.quality
    ids = [f"{generator.replace('>', '-')}_{i:06d}" for i in range(len(images))]
    write_png_folder(ctx.out / "images", images, ids)
    test, train = split["test"].modality(modality), split["train"].modality(modality)
    score = lambda generated: fidelity(generated, test, q.feature_space, ctx.device, q.kid_subset_size, ctx.cfg.seed)
    ctx.manifest.update(modality=modality, generator=generator, seed=ctx.cfg.seed, images=ids,
                        fidelity=score(images), fidelity_real_train=score(train[: len(images)]), **extra)



# -------------------------------------------------------------------------------------------------- MAE


def run_mae(ctx: Context) -> None:
    from transformers.utils import logging

    from genaug import mae

    logging.disable_progress_bar()  # the stage's own bar is the one to watch

    modality, condition, seed = ctx.params["modality"], ctx.params["condition"], ctx.params["seed"]
    seed += spec_of(condition).seed_offset  # real-aa, the A/A check: identical to real but for the seeds
    split = load_split(ctx.inputs["split"])
    real = split["train"].modality(modality)
    extra = extra_images(ctx, split, modality)
    images = real if extra is None else torch.cat([real, extra])
    # Scratch: normalisation fit on the real training images, identical for every condition of a
    # modality, so the conditions differ in their training data and nothing else. Pretrained: the
    # model's own image-processor normalisation, applied once (saved beside the model either way).
    normalizer = mae.normalizer_for(ctx.cfg.mae, real)
    steps = ctx.params.get("steps", ctx.cfg.mae.steps)
    cfg = ctx.cfg.mae.model_copy(update={"steps": steps})
    trainer = ctx.trainer(steps, "log.jsonl")
    model, history = mae.train(cfg, images, normalizer, seed, trainer)
    model.save_pretrained(ctx.out / "model")
    # For the seed paper's statistic: the mean training loss of each complete pass over the images.
    per_epoch = -(-len(images) // cfg.batch_size)
    losses = trainer.step_losses["loss"]
    epochs = [sum(losses[i:i + per_epoch]) / per_epoch for i in range(0, len(losses) - per_epoch + 1, per_epoch)]
    (ctx.out / "epoch_loss.json").write_text(json.dumps({"steps_per_epoch": per_epoch, "epoch_mean_loss": epochs}))
    normalizer.save(ctx.out / "model", ctx.cfg.data.image_size)
    ctx.manifest.update(modality=modality, condition=condition, seed=seed, n_images=len(images),
                        n_real=len(real), steps=steps, budget=ctx.cfg.study.budget, final_loss=history[-1]["loss"],
                        init=ctx.cfg.mae.init, normalizer=normalizer.source, norm_pix_loss=ctx.cfg.mae.norm_pix_loss)


def extra_images(ctx: Context, split: dict[str, Frames], modality: str) -> torch.Tensor | None:
    """What a condition adds to the real training images (uint8), or None when it adds nothing (its row of
    study.conditions.CONDITIONS says what each adds): `n_extra` images (study.n_synthetic, or
    round(ratio x n_train) for a ratio-sweep condition `<condition>@<ratio>`)."""
    condition, n = ctx.params["condition"].split("@")[0], ctx.params.get("n_extra", ctx.cfg.study.n_synthetic)
    real = split["train"].modality(modality)
    if not spec_of(condition).extra:
        return None
    if "generator" in ctx.inputs:
        return load_synthetic(ctx.inputs["generator"])[:n]
    if condition == "real-x2":
        return real[torch.arange(n) % len(real)]
    if condition == "real+classic":
        from genaug.data.images import classic_augment

        return classic_augment(real, n, ctx.cfg.seed)
    if condition == "real+real":
        return split["pool"].modality(modality)[:n]
    if condition == "real+noise":
        unit = to_unit(real)
        mean, std = unit.mean(dim=(0, 2, 3)).view(1, -1, 1, 1), unit.std(dim=(0, 2, 3)).view(1, -1, 1, 1)
        generator = torch.Generator().manual_seed(ctx.cfg.seed)
        return from_unit(mean + std * torch.randn((n, *real.shape[1:]), generator=generator))
    raise ValueError(f"unknown condition {condition}")


# ------------------------------------------------------------------------------------------- evaluation


class MeanPredictor:
    """Predicts every masked pixel as the training set's per-channel mean: the floor any MAE must beat."""

    def __init__(self, train_images: torch.Tensor):
        self.mean = to_unit(train_images).mean(dim=(0, 2, 3)).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, noise: torch.Tensor, patch: int, mask_ratio: float):
        from genaug.mae import mask_from_noise

        return self.mean.expand(images.shape).clone(), mask_from_noise(noise, mask_ratio)


class PatchMeanPredictor:
    """Predicts every masked patch as its own true mean: the floor of a norm_pix_loss MAE, whose
    reconstructions are un-normalised with each hidden patch's true mean and variance."""

    def __init__(self, normalizer):
        self.normalizer = normalizer

    def __call__(self, images: torch.Tensor, noise: torch.Tensor, patch: int, mask_ratio: float):
        from genaug.mae import mask_from_noise, patch_mean_fill

        return patch_mean_fill(images, self.normalizer, patch), mask_from_noise(noise, mask_ratio)


class MAEPredictor:
    def __init__(self, folder: Path, device: str):
        from transformers import ViTMAEForPreTraining
        from transformers.utils import logging

        logging.disable_progress_bar()
        from genaug.mae import Normalizer

        from safetensors import SafetensorError

        try:
            self.model = ViTMAEForPreTraining.from_pretrained(folder, use_safetensors=True, local_files_only=True)
        except (OSError, ValueError, SafetensorError) as e:
            raise UserError(f"{folder}: the MAE's weights do not load ({e.__class__.__name__}); delete its stage "
                            "folder and run again to retrain it") from None
        self.model = self.model.to(device).eval()
        self.normalizer = Normalizer.load(folder)

    def __call__(self, images: torch.Tensor, noise: torch.Tensor, patch: int, mask_ratio: float):
        from genaug.mae import reconstruct

        return reconstruct(self.model, self.normalizer, images, noise)


def run_eval(ctx: Context) -> None:
    from genaug import mae

    cfg, modality = ctx.cfg, ctx.params["modality"]
    split = load_split(ctx.inputs["split"])
    test = split["test"]
    images = test.modality(modality)
    patch = mae.patch_size(cfg.mae)
    if "mae" in ctx.inputs:
        predictor = MAEPredictor(ctx.inputs["mae"] / "model", ctx.device)
    elif cfg.mae.norm_pix_loss:
        predictor = PatchMeanPredictor(mae.normalizer_for(cfg.mae, split["train"].modality(modality)))
        ctx.manifest["floor"] = "true patch means (norm_pix_loss)"
    else:
        predictor = MeanPredictor(split["train"].modality(modality))
        ctx.manifest["floor"] = "training-set mean"
    noise = mae.fixed_noise(test.ids, (cfg.data.image_size // patch) ** 2, cfg.eval.seed)
    batch_size = cfg.eval.batch_size or (512 if ctx.device == "cuda" else 64)  # fp32: scores are exact
    # Shown reconstructed: the first images of the first batch. Several processes (a data-parallel run)
    # each score a contiguous share of the test images, in batches that together make `batch_size`,
    # and every process receives all the results, in the original order.
    n, k = len(images), min(cfg.eval.n_examples, batch_size, len(images))
    world, rank = distributed.world_size(), distributed.rank()
    distributed.init()
    low, high = n * rank // world, n * (rank + 1) // world
    per_process = -(-batch_size // world)
    mse, psnr, examples = [], [], []
    for start in range(low, high, per_process):
        chunk = slice(start, min(start + per_process, high))
        prediction, mask = predictor(images[chunk], noise[chunk], patch, cfg.mae.mask_ratio)
        batch_mse, batch_psnr = mae.masked_errors(prediction, to_unit(images[chunk]), mask, patch)
        mse.append(batch_mse)
        psnr.append(batch_psnr)
        if start < k:
            examples.append((prediction[: k - start], mask[: k - start]))
        ctx.advance(min((chunk.stop - low) * world, n))
    shares = distributed.all_gather_object((mse, psnr, examples))  # [this process's] with one process
    mse = torch.cat([batch for share in shares for batch in share[0]])
    psnr = torch.cat([batch for share in shares for batch in share[1]])
    examples = [(torch.cat([p for share in shares for p, _ in share[2]]),
                 torch.cat([m for share in shares for _, m in share[2]]))]
    with open(ctx.out / "per_image.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "night", "masked_mse", "psnr"])
        for row in zip(test.ids, test.night, mse.tolist(), psnr.tolist()):
            writer.writerow([row[0], "" if row[1] is None else int(row[1]), f"{row[2]:.8g}", f"{row[3]:.6g}"])
    prediction, mask = examples[0]
    k = min(cfg.eval.n_examples, len(prediction))
    pixel_mask = mae.patch_mask_to_pixels(mask[:k], patch, cfg.data.image_size)
    original = images[:k]
    masked = original * (1 - pixel_mask).to(torch.uint8) + (pixel_mask * 127).to(torch.uint8)
    # What a reader compares: the model's fill-in of the hidden patches, pasted into the visible ones.
    pasted = to_unit(original) * (1 - pixel_mask) + prediction[:k] * pixel_mask
    from safetensors.torch import save_file

    save_file({"original": original.contiguous(), "masked": masked.contiguous(), "reconstruction": from_unit(pasted)},
              ctx.out / "examples.safetensors")
    ctx.manifest.update(modality=modality, n_images=len(images), eval_seed=cfg.eval.seed,
                        masked_mse=float(mse.mean()), psnr=float(psnr.mean()))


# ------------------------------------------------------------------------------------------------ probe


def run_probe(ctx: Context) -> None:
    """Linear and kNN probes of an MAE's frozen encoder (or a floor's: a random-init encoder of the same
    architecture, the pretrained one untrained) on the source's labels: trained on the real training
    images' features, scored on the test images'. Writes per_image.csv (one row per task and test image:
    each probe's log-loss and 0/1 correctness) and the metrics in the manifest."""
    import numpy as np

    from genaug import mae, probe

    cfg, modality, condition = ctx.cfg, ctx.params["modality"], ctx.params["condition"]
    split = load_split(ctx.inputs["split"])
    train, test = split["train"], split["test"]
    images = {"train": train.modality(modality), "test": test.modality(modality)}
    if "mae" in ctx.inputs:
        model, normalizer = probe.load_encoder(ctx.inputs["mae"] / "model", ctx.device)
    else:
        normalizer = mae.normalizer_for(cfg.mae, images["train"])
        size, channels = cfg.data.image_size, images["train"].shape[1]
        model = (probe.random_encoder(cfg.mae, size, channels, cfg.seed) if condition == "random-init"
                 else probe.pretrained_encoder(cfg.mae, size, channels))
    batch_size = cfg.probe.batch_size or (512 if ctx.device == "cuda" else 64)
    features, done = {}, 0
    for name, part in images.items():
        features[name] = probe.encoder_features(model, normalizer, part, ctx.device, batch_size).numpy()
        done += len(part)
        ctx.advance(done)
    metrics, rows = {}, []
    for task in ctx.params["tasks"]:
        if task not in train.labels:
            raise UserError(f"probe.tasks: the data source gives no '{task}' labels; choose from "
                            f"{sorted(train.labels) or 'none'} or set probe.tasks = []")
        result = probe.probe(features["train"], np.asarray(train.labels[task]), features["test"],
                             np.asarray(test.labels[task]), cfg.probe.knn_k, cfg.probe.logistic_c, cfg.seed)
        metrics[task] = {kind: {k: v for k, v in scores.items() if k not in ("log_loss", "correct")}
                         for kind, scores in result.items()}
        for i, image_id in enumerate(test.ids):
            rows.append([task, image_id, *(f"{result[kind][key][i]:.8g}" for kind in ("linear", "knn")
                                           for key in ("log_loss", "correct"))])
    with open(ctx.out / "per_image.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "image_id", "linear_log_loss", "linear_correct", "knn_log_loss", "knn_correct"])
        writer.writerows(rows)
    ctx.manifest.update(modality=modality, condition=condition, tasks=ctx.params["tasks"], metrics=metrics,
                        label_names={t: split["test"].label_names.get(t) for t in ctx.params["tasks"]},
                        n_train=len(images["train"]), n_test=len(images["test"]))
