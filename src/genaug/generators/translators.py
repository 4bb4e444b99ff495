"""Trained RGB -> thermal translators, loaded from their folders for use on new images.

A translator folder holds `config.json` ("model" names the translator; "image_size" and "resize" say
how its training images were fitted) and `weights.safetensors`; a translator stage folder holds it as
`model/`. `LOADERS` is the one registry: config.json's "model" -> that module's `load_generator`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from genaug.errors import UserError


def _cyclegan(folder: Path):
    from genaug.generators import cyclegan

    return cyclegan.load_generator(folder)


def _pix2pix(folder: Path):
    from genaug.generators import pix2pix

    return pix2pix.load_generator(folder)


def _vit_translator(folder: Path):
    from genaug.generators import vit_translator

    return vit_translator.load_generator(folder)


# config.json "model" -> folder -> the RGB -> thermal network in eval mode ([-1, 1] in and out)
LOADERS: dict[str, Callable] = {"cyclegan": _cyclegan, "pix2pix": _pix2pix, "vit_translator": _vit_translator}

FILES = ("config.json", "weights.safetensors")


def model_folder(folder: Path) -> Path:
    """The folder itself when it holds a translator, else its `model/`; a UserError when neither does."""
    folder = Path(folder)
    for candidate in (folder, folder / "model"):
        if (candidate / "config.json").is_file():
            if not (candidate / "weights.safetensors").is_file():
                raise UserError(f"{candidate}: config.json without weights.safetensors; the model was not "
                                "saved completely, train it again")
            return candidate
    raise UserError(f"{folder}: no translator here (neither config.json + weights.safetensors nor model/ "
                    "holding them); give a translator stage folder or its model/ folder")


def load_translator(folder: Path):
    """-> (network in eval mode on the CPU: (B, channels_a, S, S) -> (B, channels_b, S, S) in [-1, 1],
    config.json as a dict). `folder`: a translator's model folder or the stage folder holding `model/`."""
    from pydantic import ValidationError
    from safetensors import SafetensorError

    folder = model_folder(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{folder / 'config.json'}: unreadable ({e.__class__.__name__}); restore it or train "
                        "the model again") from None
    model = config.get("model") if isinstance(config, dict) else None
    if model not in LOADERS:
        raise UserError(f"{folder / 'config.json'}: model = {model!r} is no translator; known: "
                        f"{', '.join(LOADERS)}")
    for key in ("image_size", "resize", "channels_a", "channels_b"):
        if key not in config:
            raise UserError(f"{folder / 'config.json'}: no '{key}' (saved by an older genaug); train the "
                            "model again")
    try:
        net = LOADERS[model](folder)
    except (OSError, SafetensorError) as e:
        raise UserError(f"{folder / 'weights.safetensors'}: unreadable ({e}); restore it or train the model "
                        "again") from None
    except ValidationError as e:
        raise UserError(f"{folder / 'config.json'}: not a valid {model} config ({e.errors()[0]['msg']}); "
                        "restore it or train the model again") from None
    except RuntimeError as e:
        if not str(e).startswith("Error(s) in loading state_dict"):
            raise
        raise UserError(f"{folder}: weights.safetensors does not fit config.json; they come from different "
                        "models, train it again") from None
    return net, config
