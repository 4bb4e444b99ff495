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
    """A UserError ends the command with its one-line message and exit status 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(UserError.exit_code) from None

    return wrapper


@app.command()
@user_errors
def run(
    config: Optional[Path] = typer.Argument(None, help="Study config (TOML). Omitted: the built-in quickstart."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<config name>)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
):
    """Run the whole study; stages already complete in the run directory are reused."""
    from genaug.config import load_config
    from genaug.study.runner import run_study

    cfg = load_config(config, set_)
    if out is None:
        if config is not None and config.name == "config.toml" and (config.parent / "plan.json").is_file():
            out = config.parent  # re-running a run directory's own config: reuse what it holds
        else:
            out = Path("runs") / (config.stem if config else "quickstart")
    run_study(cfg, out)


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
    from genaug.study.runner import results_table

    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    summary = build_report(run_dir)
    Console().print(results_table(summary))
    typer.echo(f"report: {run_dir / 'report.html'}")


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
):
    """What a data source holds: counts, splits, day/night, sizes, modes, missing partners, bad files."""
    from rich.console import Console

    from genaug.data import folder, kaist

    if headers not in ("sample", "all", "decode"):
        raise UserError(f"--headers {headers!r}: use sample, all or decode")
    if source == "kaist":
        if root is None:
            raise UserError("genaug data inspect kaist ROOT: give the folder holding images/")
        report = kaist.inspect(root, headers=headers)
    elif source == "folder":
        report = folder.inspect(rgb, thermal, headers=headers)
    else:
        raise UserError(f"data inspect {source!r}: the sources with files to inspect are kaist and folder")
    Console().print_json(data=report)


def main() -> None:
    app(prog_name="genaug")


if __name__ == "__main__":
    sys.exit(main())
