"""Every generator a study can name, in one table: config validation, the plan, the stages, the memory and
disk estimates, run health and the report all read `GENERATORS`; nothing else lists generator names.

An entry of `study.generators.<modality>` is one of

    ddpm                         trained here on the pool's frames of that modality, then sampled
    cyclegan, pix2pix, vit_translator
                                 trained here on the pool's RGB -> thermal pairs, then used on pool RGB frames
    folder:<path>                images made anywhere (a folder), fitted like the real frames
    pipeline:<path or hub id>    an unconditional diffusers pipeline on this machine, sampled here
    <rgb entry>><translator>     a chain: an RGB entry's images translated to thermal (ddpm>cyclegan,
                                 folder:sd_images>pix2pix)

Each gives the condition `real+gen:<name>`: the entry itself for a trained generator, the folder's or the
pipeline's own name for `folder:` and `pipeline:`, `<source name>><translator>` for a chain. Importing
this module imports nothing heavy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class GeneratorSpec:
    name: str  # the word in study.generators, and the stage folder under the run directory
    makes: tuple[str, ...]  # the modalities it can make
    how: Literal["samples", "translates", "reads"]  # draws new images; maps pool RGB frames; reads a folder
    trains: bool  # trained here on the pool: a config section of its name, log.jsonl, checkpoints, health
    runner: str  # the study.stages function that builds its stage
    watched: str | None = None  # the training loss run health watches (analysis.health)
    batch_keys: tuple[str, ...] = ()  # the config keys whose batch sizes decide its memory
    saved_copies: int = 0  # weight copies its folder keeps (the DDPM: EMA and raw)
    translating_net: str = ""  # a translator: which saved network maps RGB to thermal
    argument: str = ""  # what follows "<name>:" in the entry ("" = takes none)
    about: str = ""


GENERATORS: dict[str, GeneratorSpec] = {spec.name: spec for spec in (
    GeneratorSpec("ddpm", ("rgb", "thermal"), "samples", True, "run_ddpm", watched="loss",
                  batch_keys=("ddpm.batch_size", "ddpm.sample_batch_size"), saved_copies=2,
                  about="an unconditional DDPM trained on the pool (RGB, or thermal directly)"),
    # GAN translators are watched on their reconstruction loss: their adversarial terms oscillate by design
    GeneratorSpec("cyclegan", ("thermal",), "translates", True, "run_translator", watched="cycle",
                  batch_keys=("cyclegan.batch_size",), saved_copies=1, translating_net="netG_A",
                  about="unpaired RGB -> thermal translation"),
    GeneratorSpec("pix2pix", ("thermal",), "translates", True, "run_translator", watched="G_L1",
                  batch_keys=("pix2pix.batch_size",), saved_copies=1, translating_net="netG",
                  about="paired RGB -> thermal translation"),
    GeneratorSpec("vit_translator", ("thermal",), "translates", True, "run_translator", watched="mse",
                  batch_keys=("vit_translator.batch_size",), saved_copies=1, translating_net="netG",
                  about="the seed paper's ViT-encoder baseline"),
    GeneratorSpec("folder", ("rgb", "thermal"), "reads", False, "run_folder", argument="path",
                  about="your own synthetic images, made anywhere"),
    GeneratorSpec("pipeline", ("rgb", "thermal"), "samples", False, "run_pipeline", argument="path or hub id",
                  batch_keys=("ddpm.sample_batch_size",),
                  about="an unconditional diffusers pipeline (DDPMPipeline, DDIMPipeline) on this machine"),
)}

TRAINED = tuple(name for name, spec in GENERATORS.items() if spec.trains)
TRANSLATORS = tuple(name for name, spec in GENERATORS.items() if spec.how == "translates")
CHAIN_STAGE = "chain"  # the stage folder of every chain: it trains nothing, it only translates
# every stage folder that holds a synthetic set
SYNTHETIC_STAGES = (*GENERATORS, CHAIN_STAGE)


@dataclass(frozen=True)
class Entry:
    """One parsed entry of study.generators.<modality>."""

    text: str  # as written in the config
    spec: GeneratorSpec  # a chain's translator
    modality: str  # what it makes
    argument: str = ""  # folder:/pipeline:'s path or hub id
    source: Entry | None = None  # a chain: the RGB entry whose images are translated

    @property
    def name(self) -> str:
        """The condition's name after "real+gen:", and the synthetic images' name."""
        if self.source is not None:
            return f"{self.source.name}>{self.spec.name}"
        if self.argument:
            return argument_name(self.argument)
        return self.spec.name

    @property
    def stage(self) -> str:
        return CHAIN_STAGE if self.source is not None else self.spec.name

    def parts(self) -> list[Entry]:
        """The entries whose stages this one reads: a chain's source and translator, else itself."""
        if self.source is None:
            return [self]
        return [self.source, Entry(self.spec.name, self.spec, "thermal")]


def argument_name(argument: str) -> str:
    """A folder's or pipeline's name: its last path component (a hub id's model name), made folder-safe."""
    text = argument.rstrip("/\\") or argument
    last = re.split(r"[/\\]", text)[-1] or "root"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", last)


def parse(text: str, modality: str) -> Entry:
    """`text` as an entry of study.generators.<modality>, or a ValueError saying what is wrong and what
    would be right (pydantic turns it into the config's one-line error)."""
    key = f"study.generators.{modality}"
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{key}: an empty entry; name a generator ({known()})")
    if ">" in text:
        source_text, _, translator = text.rpartition(">")
        if translator not in TRANSLATORS:
            raise ValueError(f"{key}: '{text}': a chain ends in a translator ({', '.join(TRANSLATORS)}), "
                             f"not '{translator}'")
        if modality != "thermal":
            raise ValueError(f"{key}: '{text}' is a chain to thermal; list it under study.generators.thermal")
        source = parse(source_text, "rgb")
        if source.source is not None:
            raise ValueError(f"{key}: '{text}' chains twice; a chain is one RGB source and one translator")
        return Entry(text, GENERATORS[translator], "thermal", source=source)
    name, colon, argument = text.partition(":")
    spec = GENERATORS.get(name)
    if spec is None:
        raise ValueError(f"{key}: unknown generator '{text}'; use one of {known()}")
    if spec.argument and not (colon and argument.strip()):
        raise ValueError(f"{key}: '{text}' needs its {spec.argument}: {name}:<{spec.argument}>")
    if colon and not spec.argument:
        raise ValueError(f"{key}: '{text}': {name} takes no ':' argument; write '{name}'")
    if modality not in spec.makes:
        raise ValueError(f"{key}: {name} makes {' and '.join(spec.makes)} images, not {modality}; "
                         f"use it under study.generators.{spec.makes[0]}"
                         + (" (or chain it after an RGB generator: ddpm>" + name + ")" if spec.how == "translates"
                            else ""))
    return Entry(text, spec, modality, argument.strip())


def known() -> str:
    names = [f"{n}:<{s.argument}>" if s.argument else n for n, s in GENERATORS.items()]
    return ", ".join(names) + ", or <rgb entry>><translator>"


def folder_path(argument: str) -> Path:
    return Path(argument).expanduser()
