"""Synthetic images made outside genaug: `folder:<path>` (images made anywhere) and `pipeline:<path or hub
id>` (an unconditional diffusers pipeline on this machine, sampled here).

Both are checked when the plan is made, before any stage runs (`fingerprint`: a one-line UserError for an
empty folder, a folder without images, too few images, a path that is no pipeline, a conditional pipeline,
a hub id not on this machine), and both are keyed by their content, so a changed folder or model rebuilds
what depends on it. Their images are fitted to the study like the real frames (`fit_to_study`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genaug.errors import UserError
from genaug.generators.registry import Entry

# what `pipeline:` samples: unconditional image pipelines whose denoiser is a UNet2DModel
UNCONDITIONAL = ("DDPMPipeline", "DDIMPipeline")


def label(entry: Entry) -> str:
    return f"study.generators.{entry.modality}: '{entry.text}'"


def fingerprint(cfg, entry: Entry) -> dict:
    """What the entry's images depend on beyond the config: a folder's files (name, size, mtime), or a
    pipeline's resolved folder and its files'; plus "summary", a line for the plan. Checks the entry."""
    if entry.spec.name == "folder":
        files = folder_files(cfg, entry)
        chosen = choose(files, cfg.study.n_synthetic, cfg.seed)
        stats = [(path.name, *_stat(path)) for path in files]
        return {"folder": str(Path(entry.argument).expanduser().resolve()), "files": stats,
                "chosen": [files[i].name for i in chosen],
                "summary": f"{len(chosen)} of {len(files)} images in {entry.argument}"}
    folder = pipeline_folder(entry)
    stats = sorted((str(p.relative_to(folder)), *_stat(p)) for p in folder.rglob("*") if p.is_file())
    return {"pipeline": str(folder.resolve()), "files": stats, "summary": f"{entry.argument} ({folder})"}


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


# ---------------------------------------------------------------------------------------------- folder:


def folder_files(cfg, entry: Entry) -> list[Path]:
    """The image files of a `folder:` entry, sorted by name; at least study.n_synthetic of them."""
    from genaug.data.folder import _SUFFIX_LIST, _check_folder, list_images

    folder = Path(entry.argument).expanduser()
    _check_folder(folder, f"{label(entry)} ({folder})")
    files = list(list_images(folder, label(entry)).values())
    if not files:
        raise UserError(f"{label(entry)}: no images ({_SUFFIX_LIST}) in {folder} (subfolders are not searched); "
                        "point it at the folder holding the synthetic images")
    n = cfg.study.n_synthetic
    if len(files) < n:
        raise UserError(f"{label(entry)}: {len(files)} images in {folder}, but study.n_synthetic = {n} are "
                        f"needed; add images or lower study.n_synthetic to at most {len(files)}")
    return files


def choose(files: list[Path], n: int, seed: int) -> list[int]:
    """Which n of the files a study uses: all when there are n, else n drawn with the study seed (in the
    folder's order), the same on every machine."""
    if len(files) == n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(len(files), size=n, replace=False).tolist())


def read_folder(cfg, entry: Entry):
    """-> (ids, (n, C, S, S) uint8): the chosen images fitted by data.resize to data.image_size, with the
    real frames' channel rule and 16-bit policy (data.folder.thermal_16bit), decoded through the frame cache."""
    from genaug.data.cache import load_cached
    from genaug.data.folder import FolderSource
    from genaug.data.frames import FrameRef

    files = folder_files(cfg, entry)
    chosen = [files[i] for i in choose(files, cfg.study.n_synthetic, cfg.seed)]
    folders = {"rgb": "", "thermal": ""} | {entry.modality: str(Path(entry.argument).expanduser())}
    data = cfg.data.model_copy(update={"source": "folder", "folder": cfg.data.folder.model_copy(update=folders)})
    refs = [FrameRef(path.stem, **{entry.modality: path}) for path in chosen]
    frames, _ = load_cached(FolderSource(data, cfg.seed), refs, data, cfg.seed, (entry.modality,))
    return frames.ids, frames.modality(entry.modality)


# -------------------------------------------------------------------------------------------- pipeline:


def pipeline_folder(entry: Entry) -> Path:
    """The folder of a `pipeline:` entry's pipeline (a folder as given, or a hub id's cached snapshot),
    checked to be an unconditional pipeline with safetensors weights."""
    argument = entry.argument
    folder = Path(argument).expanduser()
    if not folder.is_dir():
        from genaug.mae import _REPO_ID

        if not _REPO_ID.match(argument) or argument.count("/") > 1:
            raise UserError(f"{label(entry)}: no such folder on this machine (nor a hub id); give a diffusers "
                            "pipeline folder (model_index.json, unet/, scheduler/) or a hub id in the local cache")
        from huggingface_hub import constants, try_to_load_from_cache

        try:
            found = try_to_load_from_cache(argument, "model_index.json")
        except ValueError:
            found = None
        if not isinstance(found, str):
            raise UserError(f"{label(entry)}: not on this machine (no such folder, and not in the Hugging Face "
                            f"cache {constants.HF_HUB_CACHE}); download it first with `hf download {argument}`")
        folder = Path(found).parent
    check_pipeline(folder, label(entry))
    return folder


def check_pipeline(folder: Path, where: str) -> dict:
    """-> the UNet's config; a UserError (naming `where`) unless `folder` holds an unconditional pipeline
    whose UNet and scheduler genaug can load (safetensors weights only)."""
    index = _json(folder / "model_index.json", where, "no model_index.json: not a diffusers pipeline folder; "
                  "give the folder save_pretrained wrote (model_index.json, unet/, scheduler/)")
    kind = index.get("_class_name", "?") if isinstance(index, dict) else "?"
    if kind not in UNCONDITIONAL:
        raise UserError(f"{where}: {folder} holds a {kind}; pipeline: samples unconditional pipelines only "
                        f"({', '.join(UNCONDITIONAL)}): a conditional one needs prompts or images it is not given")
    unet = _json(folder / "unet" / "config.json", where, "no unet/config.json; save the pipeline again")
    if unet.get("_class_name") != "UNet2DModel":
        raise UserError(f"{where}: its unet is a {unet.get('_class_name')}, not an unconditional UNet2DModel; "
                        "pipeline: samples unconditional pipelines only")
    _json(folder / "scheduler" / "scheduler_config.json", where, "no scheduler/scheduler_config.json; save the "
          "pipeline again")
    if not list((folder / "unet").glob("*.safetensors")):
        raise UserError(f"{where}: {folder / 'unet'} has no .safetensors weights; genaug never unpickles weights: "
                        "save the pipeline again with safe_serialization (diffusers' default)")
    return unet


def _json(path: Path, where: str, missing: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{where}: {path.parent}: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{where}: {path} is unreadable ({e.__class__.__name__}); restore it") from None
    if not isinstance(value, dict):
        raise UserError(f"{where}: {path} is not a JSON object; restore it")
    return value


def fit_to_study(images, modality: str, data):
    """(n, C, H, W) uint8 from a generator of another size or channel count -> (n, C', S, S) uint8 fitted like
    the real frames: data.resize to data.image_size (PIL bicubic; an image of the study's size is kept as is),
    RGB as 3 channels, thermal as luminance with data.thermal_channels."""
    from PIL import Image

    from genaug.data.frames import with_channels
    from genaug.data.images import fit_square, to_tensor

    fitted = []
    for image in images.permute(0, 2, 3, 1).numpy():
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        pil = pil.convert("RGB" if modality == "rgb" else "L")
        fitted.append(fit_square(np.asarray(pil), data.image_size, data.resize))
    out = to_tensor(np.stack(fitted))
    return with_channels(out, data.thermal_channels) if modality == "thermal" else out
