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
                                 "(each step a job on this machine) or slurm (each step a SLURM job; see [slurm]); "
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
    """Check a config and its data (every selected image is decoded into the cache), print the plan; train nothing."""
    from rich.console import Console

    from genaug.config import load_config
    from genaug.data.cache import load_cached
    from genaug.data.selection import select
    from genaug.data.sources import open_source
    from genaug.study.plan import make_plan
    from genaug.study.runner import plan_table

    cfg = load_config(config, set_)
    console = Console()
    console.print(plan_table(make_plan(cfg), None))
    source = open_source(cfg.data, cfg.seed)
    selection = select(cfg, source)  # counts, partners, split files, leakage: paths only
    for refs in selection.sets.values():  # every selected image decoded once (a truncated file is named);
        load_cached(source, refs, cfg.data, cfg.seed, selection.modalities)  # `run` then reads the cache
    console.print_json(data=selection.summary())
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


def _image_files(items: list[Path]) -> list[Path]:
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
                            "rename one or translate them separately")
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
    sampler: str = typer.Option(..., help="dpmsolver++, ddim or ddpm."),
    steps: int = typer.Option(..., help="Denoising steps (dpmsolver++: 20 is plenty; ddpm: the training 1000)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write sample_000000.png, ... into."),
    seed: int = typer.Option(0, help="Same seed, same images."),
    batch_size: int = typer.Option(64, help="Images denoised at once."),
    size: int = typer.Option(0, help="Resize the samples to this side; 0 = the DDPM's training side."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda."),
):
    """Sample RGB images from a trained DDPM."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from genaug.data.images import RESAMPLE_POLICY, resize_square, write_png_folder
    from genaug.generators import ddpm

    pipeline = ddpm_dir if (ddpm_dir / "model_index.json").is_file() else ddpm_dir / "pipeline"
    if not (pipeline / "model_index.json").is_file():
        raise UserError(f"{ddpm_dir}: no DDPM pipeline here (neither model_index.json nor pipeline/ holding "
                        "one); give a ddpm stage folder or its pipeline/ folder")
    if sampler not in ddpm.SAMPLERS:
        raise UserError(f"--sampler {sampler!r}: use one of {', '.join(ddpm.SAMPLERS)}")
    for name, value, low in (("--n", n, 1), ("--steps", steps, 1), ("--batch-size", batch_size, 1),
                             ("--size", size, 0)):
        if value < low:
            raise UserError(f"{name} {value}: must be at least {low}")
    if not 0 <= seed < 2**32:
        raise UserError(f"--seed {seed}: use a seed from 0 to {2**32 - 1}")
    _output_folder(out)
    scheduler_config = pipeline / "scheduler" / "scheduler_config.json"
    try:
        train_timesteps = json.loads(scheduler_config.read_text())["num_train_timesteps"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{scheduler_config}: unreadable ({e.__class__.__name__}); the pipeline was not saved "
                        "completely, train it again") from None
    if steps > train_timesteps:
        raise UserError(f"--steps {steps}: more than the {train_timesteps} timesteps the DDPM was trained with; "
                        "lower it")
    device = _device(device)
    columns = (TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:  # a 1000-step DDPM takes a while: show it moving
        task = progress.add_task("sample", total=n)
        images = ddpm.sample(pipeline, n, sampler, steps, batch_size, seed, device,
                             on_batch=lambda done: progress.update(task, completed=done))
    side = images.shape[-1]
    note = ""
    if size and size != side:
        images = resize_square(images, size)
        note = f", resized from {side}x{side} ({RESAMPLE_POLICY})"
    write_png_folder(out, images, [f"sample_{i:06d}" for i in range(n)])
    typer.echo(f"wrote {n} samples to {out}: {images.shape[-1]}x{images.shape[-1]}{note}; {sampler}, {steps} steps, "
               f"seed {seed}, on {device}")


def main() -> None:
    app(prog_name="genaug")


if __name__ == "__main__":
    sys.exit(main())
