"""genaug's command line: parse, call, print. Heavy libraries load inside the commands that use them."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer

from genaug.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Does adding generated images to a small real data set make a masked autoencoder better?")
data_app = typer.Typer(no_args_is_help=True, help="Data sources: write or inspect them.")
app.add_typer(data_app, name="data")

SET_HELP = "Override a config key, e.g. --set mae.steps=200 (repeatable)."


def user_errors(fn):
    """A UserError ends the command with its one-line message and exit status 2 (130 for Ctrl-C), no
    traceback; so does the KeyboardInterrupt of a second Ctrl-C, which stops at once."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from genaug.errors import Interrupted

        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            error = Interrupted("interrupted at once (second Ctrl-C): completed stages and written checkpoints are "
                                "kept, the stage in progress goes back to its last checkpoint; run the same genaug "
                                "command again to resume")
        except UserError as e:
            error = e
        from genaug.distributed import is_main

        if is_main():  # under torchrun every process meets the same error; one says it
            typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None

    return wrapper


@app.command()
@user_errors
def run(
    config: Optional[Path] = typer.Argument(None, help="Study config (TOML). Omitted: the built-in quickstart."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<config name>)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    launcher: str = typer.Option("auto", "--launcher", help="inprocess (steps here, in order), local "
                                 "(each step a job on this machine) or slurm (each step a SLURM job; see the slurm.* keys); "
                                 "auto: local on CUDA in one process, else inprocess"),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", help="jobs at once (local / slurm); "
                                               "default: runtime.processes_per_gpu x GPUs for local jobs on CUDA, "
                                               "else 1"),
):
    """Run the whole study; stages already complete in the run directory are reused."""
    from genaug.config import load_config
    from genaug.study.runner import run_study

    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: use one of {', '.join(LAUNCHERS[1:])} or auto (the default)")
    if max_parallel is not None and max_parallel < 1:
        raise UserError(f"--max-parallel {max_parallel}: must be at least 1")
    cfg = load_config(config, set_)
    if out is None:
        if config is not None and config.name == "config.toml" and (config.parent / "plan.json").is_file():
            out = config.parent  # re-running a run directory's own config: reuse what it holds
        else:
            out = Path("runs") / (config.stem if config else "quickstart")
    run_study(cfg, out, launcher=launcher, max_parallel=max_parallel)
    from genaug.distributed import shutdown

    shutdown()  # several processes: each leaves once the main one has written the report


LAUNCHERS = ("auto", "inprocess", "local", "slurm")


@app.command()
@user_errors
def status(run_dir: Path = typer.Argument(..., help="A run directory (while it runs, or after)")):
    """Which steps of a run are done, running, failed or pending."""
    from rich.console import Console

    from genaug.study.status import status_table

    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    table, counts = status_table(run_dir)
    console = Console()
    console.print(table)
    console.print(", ".join(f"{n} {state}" for state, n in counts.items()))


@app.command()
@user_errors
def validate(
    config: Optional[Path] = typer.Argument(None, help="Study config (TOML). Omitted: the built-in quickstart."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
):
    """Check a config and its data (every image decoded into the cache, every label read); train nothing."""
    from rich.console import Console

    from genaug.config import load_config
    from genaug.data.cache import load_cached
    from genaug.data.labels import LabelReader, balance
    from genaug.data.selection import select
    from genaug.data.sources import open_source
    from genaug.study.plan import make_plan
    from genaug.study.runner import plan_table

    cfg = load_config(config, set_)
    console = Console()
    console.print(plan_table(make_plan(cfg), None))
    source = open_source(cfg.data, cfg.seed)
    selection = select(cfg, source)  # counts, partners, split files, leakage: paths only
    # the probe's labels too, as the split stage reads them: a missing or malformed annotation is named here
    reader = LabelReader(source, cfg.data, cfg.probe)
    reader.check([ref for refs in selection.sets.values() for ref in refs])
    balances = {}
    for name, refs in selection.sets.items():  # every selected image decoded once (a truncated file is
        frames, _ = load_cached(source, refs, cfg.data, cfg.seed, selection.modalities, labels=reader)  # named)
        balances[name] = {task: balance(frames.labels[task], frames.label_names[task]) for task in reader.tasks}
    console.print_json(data={**selection.summary(), "labels": {"notes": reader.notes(), "balance": balances}})
    console.print(f"{config or 'built-in quickstart config'}: valid")


@app.command()
@user_errors
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `genaug run`.")):
    """Rebuild results.csv, summary.json and the report from a run directory's stored results."""
    from rich.console import Console

    from genaug.analysis.report import build_report
    from genaug.study.runner import results_table, verdict_text

    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    _check_run_format(run_dir)
    summary = build_report(run_dir)
    Console().print(results_table(summary))
    typer.echo(verdict_text(summary))
    typer.echo(f"report: {run_dir / 'report.html'}")


def _check_run_format(run_dir: Path) -> None:
    """Refuse, rather than misread, a run directory whose plan or stage manifests this genaug cannot read:
    a damaged plan.json, or stage outputs written by another version (store.FORMAT_VERSION)."""
    import json

    from genaug.study.store import PLAN_FILE
    from genaug.study.store import FORMAT_VERSION, MANIFEST

    plan = run_dir / PLAN_FILE
    if not plan.is_file():
        return  # the report names what is missing
    try:
        folders = [step["folder"] for step in json.loads(plan.read_text())["steps"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{plan}: unreadable ({e.__class__.__name__}); write it again with `genaug run "
                        f"{run_dir / 'config.toml'}` (complete stages are reused)") from None
    for folder in folders:
        manifest = run_dir / folder / MANIFEST
        if not manifest.is_file():
            continue  # the report names the incomplete stage
        try:
            version = json.loads(manifest.read_text()).get("format_version")
        except (OSError, ValueError, AttributeError) as e:
            raise UserError(f"{manifest}: unreadable ({e.__class__.__name__}); delete {run_dir / folder} and "
                            f"rebuild it with `genaug run {run_dir / 'config.toml'}`") from None
        if version != FORMAT_VERSION:
            raise UserError(f"{manifest}: format_version {version}, written by another genaug (this one reads "
                            f"{FORMAT_VERSION}); rebuild it with `genaug run {run_dir / 'config.toml'}`, or use "
                            "the genaug that wrote it")


@data_app.command("scenes")
@user_errors
def data_scenes(
    out: Path = typer.Argument(..., help="Folder to write rgb/, thermal/ and tags.csv into."),
    n: int = typer.Option(100, "--n", min=1, help="Number of frame pairs."),
    seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Scene seed; frames depend only on (seed, index)."),
    width: int = typer.Option(160, min=32, help="Canvas width."),
    height: int = typer.Option(128, min=32, help="Canvas height."),
    night_fraction: float = typer.Option(0.3, min=0.0, max=1.0, help="Share of night frames."),
):
    """Write built-in procedural RGB + thermal street scenes as a paired folder."""
    from genaug.data.scenes import write_paired_folder

    try:
        write_paired_folder(out, n, seed=seed, width=width, height=height, night_fraction=night_fraction)
    except (FileExistsError, NotADirectoryError) as e:
        raise UserError(f"{out}: cannot create the folders there ({e.strerror}); give another OUT") from None
    typer.echo(f"wrote {n} RGB + thermal pairs to {out}")


@data_app.command("inspect")
@user_errors
def data_inspect(
    source: str = typer.Argument(..., help="kaist or folder"),
    root: Optional[Path] = typer.Argument(None, help="kaist: the folder holding images/ and imageSets/"),
    rgb: Optional[Path] = typer.Option(None, help="folder: the RGB image folder"),
    thermal: Optional[Path] = typer.Option(None, help="folder: the thermal image folder"),
    headers: str = typer.Option("sample", help="sample: read 200 image headers; all: every header; "
                                "decode: decode every image (finds truncated files)"),
    min_height: int = typer.Option(50, "--min-height", min=1, help="kaist: a frame shows a person when a 'person' "
                                   "box is at least this tall (probe.kaist_min_height)"),
    labels: Optional[Path] = typer.Option(None, "--labels", help="folder: a CSV with columns image,label "
                                          "(probe.labels) whose class balance to report"),
):
    """What a data source holds: counts, splits, day/night, sizes, modes, missing partners, bad files, and the
    probe's label balance (KAIST: from annotations/; folder: from --labels)."""
    from rich.console import Console

    from genaug.data import folder, kaist

    if headers not in ("sample", "all", "decode"):
        raise UserError(f"--headers {headers!r}: use sample, all or decode")
    if source == "kaist":
        if root is None:
            raise UserError("genaug data inspect kaist ROOT: give the folder holding images/")
        report = kaist.inspect(root, headers=headers, min_height=min_height)
    elif source == "folder":
        report = folder.inspect(rgb, thermal, headers=headers, labels=str(labels) if labels else None)
    else:
        raise UserError(f"data inspect {source!r}: the sources with files to inspect are kaist and folder")
    Console().print_json(data=report)


DEVICES = ("auto", "cpu", "cuda")


def _device(device: str) -> str:
    """--device auto|cpu|cuda -> the torch device to use (auto: cuda when one is visible)."""
    from genaug.config import RuntimeConfig
    from genaug.engine import resolve_device

    if device not in DEVICES:
        raise UserError(f"--device {device!r}: use {', '.join(DEVICES)}")
    return resolve_device(RuntimeConfig(device=device))


def _output_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; give a folder to write the PNGs into")


def _image_files(items: list[Path], command: str = "translate") -> list[Path]:
    """Image files, and the image files (IMAGE_SUFFIXES, not recursive) of folders, in a stable order."""
    from genaug.data.images import IMAGE_SUFFIXES

    files = []
    for item in items:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise UserError(f"{item}: no such file or folder; give image files or folders of images")
    if not files:
        raise UserError(f"no images in {', '.join(map(str, items))} (looked for {', '.join(IMAGE_SUFFIXES)}); "
                        "give image files or folders holding them")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise UserError(f"{seen[path.stem]} and {path} would both be written as {path.stem}.png; "
                            f"rename one or {command} them separately")
        seen[path.stem] = path
    return files


@app.command()
@user_errors
def translate(
    model_dir: Path = typer.Argument(..., help="A translator's folder (config.json + weights.safetensors) or "
                                     "the stage folder holding it as model/."),
    images: list[Path] = typer.Argument(..., help="RGB image files, or folders of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write <stem>.png thermal images into."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda."),
):
    """Translate RGB images to thermal with a trained CycleGAN, pix2pix or ViT translator."""
    import numpy as np

    from genaug.data.images import fit_square, read_rgb, to_tensor, write_png_folder
    from genaug.generators.networks import translate as run_net
    from genaug.generators.translators import load_translator

    _output_folder(out)
    files = _image_files(images)
    device = _device(device)
    net, config = load_translator(model_dir)
    net = net.to(device)
    size, resize = config["image_size"], config["resize"]
    # In chunks, so a folder of thousands of frames never sits in memory at once.
    for start in range(0, len(files), 64):
        chunk = files[start : start + 64]
        # fitted exactly as the training frames were (size and resize policy), so the net sees what it learnt on
        rgb = to_tensor(np.stack([fit_square(read_rgb(path), size, resize) for path in chunk]))
        write_png_folder(out, run_net(net, rgb), [path.stem for path in chunk])
    typer.echo(f"wrote {len(files)} translated images to {out}: {config['channels_b']}-channel {size}x{size} "
               f"PNGs from {config['model']} ({model_dir}); inputs fitted to {size}x{size} by '{resize}'")


@app.command()
@user_errors
def sample(
    ddpm_dir: Path = typer.Argument(..., help="A DDPM pipeline folder (model_index.json) or the ddpm stage "
                                    "folder holding it as pipeline/."),
    n: int = typer.Option(..., "--n", help="Number of images."),
    sampler: str = typer.Option("dpmsolver++", help="dpmsolver++, ddim or ddpm (the study's samplers)."),
    steps: Optional[int] = typer.Option(None, help="Denoising steps. Default: 20 (the study's ddpm.sample_steps, "
                                        "plenty for dpmsolver++), fewer if the DDPM was trained with fewer "
                                        "timesteps; ddpm needs the training 1000."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write sample_000000.png, ... into."),
    seed: int = typer.Option(0, help="Same seed, same images."),
    batch_size: int = typer.Option(64, help="Images denoised at once."),
    size: int = typer.Option(0, help="Resize the samples to this side; 0 = the DDPM's training side."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda."),
):
    """Sample images from a trained DDPM: RGB PNGs from an RGB model, grayscale from a 1-channel (thermal) one."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from genaug.config import DDPMConfig
    from genaug.data.images import RESAMPLE_POLICY, resize_square, write_png_folder
    from genaug.generators import ddpm

    pipeline = ddpm_dir if (ddpm_dir / "model_index.json").is_file() else ddpm_dir / "pipeline"
    if not (pipeline / "model_index.json").is_file():
        raise UserError(f"{ddpm_dir}: no DDPM pipeline here (neither model_index.json nor pipeline/ holding "
                        "one); give a ddpm stage folder or its pipeline/ folder")
    if sampler not in ddpm.SAMPLERS:
        raise UserError(f"--sampler {sampler!r}: use one of {', '.join(ddpm.SAMPLERS)}")
    for name, value, low in (("--n", n, 1), ("--steps", 1 if steps is None else steps, 1),
                             ("--batch-size", batch_size, 1), ("--size", size, 0)):
        if value < low:
            raise UserError(f"{name} {value}: must be at least {low}")
    if not 0 <= seed < 2**32:
        raise UserError(f"--seed {seed}: use a seed from 0 to {2**32 - 1}")
    _output_folder(out)
    scheduler_config = pipeline / "scheduler" / "scheduler_config.json"
    try:
        schedule = json.loads(scheduler_config.read_text())
        train_timesteps = schedule["num_train_timesteps"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{scheduler_config}: unreadable ({e.__class__.__name__}); the pipeline was not saved "
                        "completely, train it again") from None
    # diffusers' DPM-Solver++ with "leading" spacing (DDPMScheduler's, which genaug saves) fails with an
    # IndexError when asked for every training timestep; one fewer works
    leading = sampler == "dpmsolver++" and schedule.get("timestep_spacing", "leading") == "leading"
    most = train_timesteps - 1 if leading else train_timesteps
    if steps is None:  # the study's own default (ddpm.sample_steps: 20, plenty for DPM-Solver++)
        steps = min(DDPMConfig.model_fields["sample_steps"].default, most)
    if steps > most:
        why = (f"{sampler} takes at most {most} of" if most < train_timesteps else "more than")
        raise UserError(f"--steps {steps}: {why} the {train_timesteps} timesteps the DDPM was trained with; "
                        "lower it")
    device = _device(device)
    columns = (TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:  # a 1000-step DDPM takes a while: show it moving
        task = progress.add_task("sample", total=n)
        images = ddpm.sample(pipeline, n, sampler, steps, batch_size, seed, device,
                             on_batch=lambda done: progress.update(task, completed=done))
    side, channels = images.shape[-1], images.shape[1]
    note = ""
    if size and size != side:
        images = resize_square(images, size)
        note = f", resized from {side}x{side} ({RESAMPLE_POLICY})"
    write_png_folder(out, images, [f"sample_{i:06d}" for i in range(n)])
    kind = "RGB" if channels == 3 else "grayscale" if channels == 1 else f"{channels}-channel"
    typer.echo(f"wrote {n} samples to {out}: {kind} {images.shape[-1]}x{images.shape[-1]}{note}; {sampler}, "
               f"{steps} steps, seed {seed}, on {device}")


RESIZES = ("crop", "pad", "squash")
THERMAL_16BIT = ("full", "minmax")


def _study_facts(model_folder: Path) -> dict:
    """What the study that saved this MAE knew about its images, where the MAE still sits in its run
    directory (RUN_DIR/mae/<name>/model): its modality (the mae stage's manifest), the resize policy of
    the split it trained on (that split's manifest), and the run's data.folder.thermal_16bit and eval.seed
    (RUN_DIR/config.toml). A fact not found is left out: the caller falls
    back to the config defaults and says so."""
    import json
    import tomllib

    from genaug.study.store import MANIFEST

    facts: dict = {}
    stage = model_folder.parent
    run_dir = stage.parent.parent
    try:
        manifest = json.loads((stage / MANIFEST).read_text())
        if manifest.get("stage") != "mae":
            return facts
        facts["modality"] = manifest["modality"]
        split = json.loads((run_dir / "split" / manifest["inputs"]["split"] / MANIFEST).read_text())
        facts["resize"] = split["resize"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return facts
    try:
        config = tomllib.loads((run_dir / "config.toml").read_text())
        facts["thermal_16bit"] = config["data"]["folder"]["thermal_16bit"]
        facts["eval_seed"] = config["eval"]["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return facts


@app.command()
@user_errors
def reconstruct(
    mae_dir: Path = typer.Argument(..., help="A trained MAE: an mae stage folder (RUN_DIR/mae/<name>) or the "
                                   "model/ folder inside it."),
    images: list[Path] = typer.Argument(..., help="Image files, or folders of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write <stem>.png strips (original | masked | "
                             "reconstruction) and masked_mse.csv into."),
    mask_seed: Optional[int] = typer.Option(None, "--mask-seed", help="Seed of the fixed masks. Default: the "
                                            "run's eval.seed (1234 unless the study set another)."),
    mask_ratio: Optional[float] = typer.Option(None, "--mask-ratio", help="Share of the patches hidden. Default: "
                                               "the model's own (mae.mask_ratio)."),
    resize: str = typer.Option("", help="Fit images to the MAE's side by crop, pad or squash. Default: the "
                               "study's data.resize (crop when the MAE is no longer in its run directory)."),
    thermal_16bit: str = typer.Option("", "--thermal-16bit", help="16-bit thermal files: full or minmax. Default: "
                                      "the study's data.folder.thermal_16bit, else full."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda."),
):
    """Show what a trained MAE makes of any images, with the study's fixed masks, and score it.

    Each image's mask is the one the study's evaluation gives the image whose id is the file's stem: a
    test frame saved as <its id>.png gets exactly its mask, and the masked MSE of the study's per_image.csv.
    """
    import csv

    import numpy as np
    import torch
    from PIL import Image
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from genaug import mae
    from genaug.config import EvalConfig
    from genaug.data.frames import with_channels
    from genaug.data.images import fit_square, from_unit, grid, read_rgb, read_thermal, to_tensor, to_unit
    from genaug.probe import load_encoder

    folder, config = mae.saved_model(mae_dir)
    side, patch, channels = config.get("image_size"), config.get("patch_size"), config.get("num_channels")
    if not (isinstance(side, int) and isinstance(patch, int) and side % patch == 0 and channels in (1, 3)):
        raise UserError(f"{folder / 'config.json'}: image_size {side}, patch_size {patch}, num_channels {channels} "
                        "is not a genaug MAE (square images in whole patches, 1 or 3 channels); give one the "
                        "study saved")
    facts = _study_facts(folder)
    study = lambda key: " (the study's)" if key in facts else " (default: no study beside the MAE)"
    modality = facts.get("modality", "rgb" if channels == 3 else "thermal")
    if resize and resize not in RESIZES:
        raise UserError(f"--resize {resize!r}: use one of {', '.join(RESIZES)}")
    if thermal_16bit and thermal_16bit not in THERMAL_16BIT:
        raise UserError(f"--thermal-16bit {thermal_16bit!r}: use one of {', '.join(THERMAL_16BIT)}")
    resize_note = "" if resize else study("resize")
    resize = resize or facts.get("resize", "crop")
    policy_16bit = thermal_16bit or facts.get("thermal_16bit", "full")
    seed_note = "" if mask_seed is not None else study("eval_seed")
    seed = mask_seed if mask_seed is not None else facts.get("eval_seed", EvalConfig().seed)
    if not 0 <= seed < 2**31:
        raise UserError(f"--mask-seed {seed}: use a seed from 0 to {2**31 - 1}, as eval.seed")
    ratio = config.get("mask_ratio", 0.75) if mask_ratio is None else mask_ratio
    num_patches = (side // patch) ** 2
    kept = int(num_patches * (1 - ratio))  # ViTMAE's rule (mae.mask_from_noise)
    if not 0 < ratio < 1 or not 1 <= kept < num_patches:
        raise UserError(f"--mask-ratio {ratio}: hides {num_patches - kept} of the {num_patches} patches of this "
                        f"MAE; choose a ratio that hides some but not all (the model's own is "
                        f"{config.get('mask_ratio')})")
    _output_folder(out)
    files = _image_files(images, "reconstruct")
    device = _device(device)
    model, normalizer = load_encoder(folder, device)
    model.config.mask_ratio = ratio  # ViTMAE reads it at every forward pass

    def read(path: Path) -> np.ndarray:
        array = read_rgb(path) if modality == "rgb" else read_thermal(path, policy_16bit)[0]
        h, w = array.shape[:2]
        short = max(w, h) if resize == "pad" else min(w, h)  # the side the policy scales to the MAE's
        if short < side:  # the study never upscales a frame (data.frames._fit): neither does its MAE's test
            raise UserError(f"{path}: {w}x{h} is smaller than this MAE's {side}x{side} images ('{resize}' would "
                            f"upscale its {short}-pixel side); give an image at least {side} pixels there")
        return fit_square(array, side, resize)

    scores: list[tuple[str, float]] = []
    # In chunks, so a folder of thousands of frames never sits in memory at once.
    for start in range(0, len(files), 64):
        chunk = files[start : start + 64]
        batch = to_tensor(np.stack([read(path) for path in chunk]))
        if modality == "thermal":
            batch = with_channels(batch, channels)  # a 3-channel thermal MAE saw the channel repeated
        ids = [path.stem for path in chunk]  # the image id of the study's fixed mask
        prediction, mask = mae.reconstruct(model, normalizer, batch, mae.fixed_noise(ids, num_patches, seed))
        mse, _ = mae.masked_errors(prediction, to_unit(batch), mask, patch)
        # drawn as the study's report draws its examples (study.stages.run_eval)
        pixel_mask = mae.patch_mask_to_pixels(mask, patch, side)
        masked = batch * (1 - pixel_mask).to(torch.uint8) + (pixel_mask * 127).to(torch.uint8)
        pasted = from_unit(to_unit(batch) * (1 - pixel_mask) + prediction * pixel_mask)
        out.mkdir(parents=True, exist_ok=True)  # only now: an unreadable first image leaves no folder behind
        for i, image_id in enumerate(ids):
            strip = grid(torch.stack([batch[i], masked[i], pasted[i]]), columns=3)
            Image.fromarray(strip).save(out / f"{image_id}.png")
        scores += zip(ids, mse.tolist())
    with open(out / "masked_mse.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "masked_mse"])
        writer.writerows([image_id, f"{value:.8g}"] for image_id, value in scores)
    table = Table("image", "masked MSE")
    for image_id, value in scores:
        table.add_row(escape(image_id), f"{value:.6g}")
    if len(scores) > 1:
        table.add_section()
        table.add_row("mean", f"{sum(v for _, v in scores) / len(scores):.6g}")
    console = Console()
    console.print(table)
    console.print(f"masked MSE: over the hidden pixels, in [0, 1] pixel units, by the MAE in {folder}",
                  markup=False, soft_wrap=True)
    console.print(f"wrote {len(scores)} strips (original | masked | reconstruction) and masked_mse.csv to {out}; "
                  f"masks: seed {seed}{seed_note}, {num_patches - kept} of {num_patches} patches hidden (ratio "
                  f"{ratio}); {modality} images fitted to {side}x{side} by '{resize}'{resize_note}", markup=False,
                  soft_wrap=True)


def main() -> None:
    app(prog_name="genaug")


if __name__ == "__main__":
    sys.exit(main())
