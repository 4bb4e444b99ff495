"""Nothing is unpickled from disk: a pickle where weights or a checkpoint belong is refused, never run.

Every file here is a live payload: unpickling it calls `open(marker, "w")`, so the marker's absence
afterwards proves it never ran (`test_the_payloads_are_live` shows that it would). Each loader genaug
has (checkpoint resume, the split and frame cache, MAE evaluation, pretrained MAE / ViT / feature-space
models, `genaug sample`, `genaug translate`) is given the payload as its safetensors file, as a
`torch.save` file under that name, and as a `pytorch_model.bin` / `diffusion_pytorch_model.bin` beside
it or instead of it. Two properties are checked: the payload never runs, and the loader refuses it
with a one-line UserError without unpickling anything at all, not even with
`torch.load(weights_only=True)`. Static tests then read src/genaug for any unpickling call and for any
weights loaded without `use_safetensors=True`.
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from genaug.config import MAEConfig, Pix2PixConfig, RuntimeConfig, VitTranslatorConfig, load_config
from genaug.engine import Trainer
from genaug.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src" / "genaug"


class Payload:
    """Unpickled, it creates `marker`: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def pickled(marker: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    return pickle.dumps({"weight": Payload(marker)}, protocol=protocol)


def torch_saved(marker: Path) -> bytes:
    """The same payload in torch.save's zip format (what a .bin / .pt / .pth file is)."""
    buffer = io.BytesIO()
    torch.save({"weight": Payload(marker)}, buffer)
    return buffer.getvalue()


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran"


@pytest.fixture
def unpickling(monkeypatch) -> list[tuple[str, object]]:
    """Every unpickling call while the test runs, as (function, weights_only); the calls still happen."""
    calls: list[tuple[str, object]] = []

    def spy(name, real):
        def call(*args, **kwargs):
            calls.append((name, kwargs.get("weights_only")))
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(torch, "load", spy("torch.load", torch.load))
    monkeypatch.setattr(pickle, "load", spy("pickle.load", pickle.load))
    monkeypatch.setattr(pickle, "loads", spy("pickle.loads", pickle.loads))
    return calls


def one_line(error: UserError) -> str:
    text = str(error)
    assert text and "\n" not in text and text.splitlines() == [text], f"a user error is one line: {text!r}"
    return text


def test_the_payloads_are_live(tmp_path):
    """Unpickled carelessly, each payload does run: its absence elsewhere means something."""
    pickle.loads(pickled(tmp_path / "a"))
    pickle.loads(pickled(tmp_path / "b", protocol=0))
    torch.load(io.BytesIO(torch_saved(tmp_path / "c")), weights_only=False)
    assert all((tmp_path / name).exists() for name in "abc")


# ------------------------------------------------------------------------------------- Trainer checkpoints


def fit(tmp_path: Path, checkpoints: Path, stop_after: int | None = None):
    """4 steps of a tiny model, a checkpoint every 2; `stop_after` kills it after that step."""

    def on_step(step, row):
        if step == stop_after:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    runtime = RuntimeConfig(device="cpu", log_every=1, checkpoint_every=2)
    trainer = Trainer(runtime, 4, tmp_path / "log.jsonl", "tiny", on_step, checkpoints)

    def step(i):
        loss = net(torch.ones(1, 2)).pow(2).mean()
        optimizer.zero_grad()
        trainer.backward(loss)
        optimizer.step()
        return {"loss": loss}

    return trainer.fit(step, {"net": net, "optimizer": optimizer})


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A run killed after step 3: `checkpoint-2/` (tensors.safetensors + state.json) is what resumes."""
    folder = tmp_path / "checkpoints"
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path, folder, stop_after=3)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-2"]
    return folder / "checkpoint-2"


@pytest.mark.parametrize("layout", ["pickle as tensors.safetensors", "protocol-0 pickle as tensors.safetensors",
                                    "torch.save file as tensors.safetensors", "pickle as state.json",
                                    "accelerate's pickled layout instead"])
def test_a_pickle_in_a_checkpoint_is_refused_and_never_run(tmp_path, checkpoint, marker, unpickling, layout):
    if layout == "pickle as tensors.safetensors":
        (checkpoint / "tensors.safetensors").write_bytes(pickled(marker))
    elif layout == "protocol-0 pickle as tensors.safetensors":
        (checkpoint / "tensors.safetensors").write_bytes(pickled(marker, protocol=0))
    elif layout == "torch.save file as tensors.safetensors":
        (checkpoint / "tensors.safetensors").write_bytes(torch_saved(marker))
    elif layout == "pickle as state.json":
        (checkpoint / "state.json").write_bytes(pickled(marker))
    else:  # what accelerate's save_state writes: pickles genaug must not fall back to
        (checkpoint / "tensors.safetensors").unlink()
        for name in ("pytorch_model.bin", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
            (checkpoint / name).write_bytes(torch_saved(marker))
    with pytest.raises(UserError) as e:
        fit(tmp_path, checkpoint.parent)
    assert "checkpoint-2: unreadable checkpoint" in one_line(e.value)
    assert not marker.exists() and unpickling == []


# ------------------------------------------------------------------------------- split and frame cache


TINY = ["data.image_size=16", "data.n_pool=4", "data.n_train=4", "data.n_test=4", "data.scenes.n_frames=20",
        "study.n_synthetic=4", "cyclegan.d_layers=2"]


def test_a_pickle_in_the_frame_cache_is_decoded_again_never_run(marker, unpickling):
    from genaug.data.cache import cache_dir, load_cached, set_key
    from genaug.data.selection import select
    from genaug.data.sources import open_source

    cfg = load_config(None, [*TINY, "seed=77"])
    source = open_source(cfg.data, cfg.seed)
    selection = select(cfg, source)
    refs = selection.sets["test"]
    frames, _ = load_cached(source, refs, cfg.data, cfg.seed, selection.modalities)
    path = cache_dir() / f"{set_key(cfg.data, cfg.seed, refs, selection.modalities)}.safetensors"
    assert path.is_file()
    path.write_bytes(pickled(marker))
    again, hit = load_cached(source, refs, cfg.data, cfg.seed, selection.modalities)
    assert not hit and torch.equal(again.modality("rgb"), frames.modality("rgb"))  # decoded, overwritten
    assert not marker.exists() and unpickling == []


@pytest.fixture
def split_folder(tmp_path) -> Path:
    from safetensors.torch import save_file

    from genaug.data.selection import SETS

    folder = tmp_path / "split-x"
    folder.mkdir()
    save_file({f"{name}.rgb": torch.zeros(1, 3, 8, 8, dtype=torch.uint8) for name in SETS},
              folder / "frames.safetensors")
    (folder / "split.json").write_text(json.dumps({"ids": {n: ["a"] for n in SETS}, "night": {n: [False] for n in SETS}}))
    return folder


def test_a_pickle_as_a_split_is_never_run(split_folder, marker, unpickling):
    from genaug.study.outputs import load_split

    assert load_split(split_folder)["test"].modality("rgb").shape == (1, 3, 8, 8)  # the intact folder loads
    (split_folder / "frames.safetensors").write_bytes(pickled(marker))
    with pytest.raises(Exception):
        load_split(split_folder)
    assert not marker.exists() and unpickling == []


def test_a_pickle_as_a_split_is_refused_in_one_line(split_folder, marker):
    from genaug.study.outputs import load_split

    (split_folder / "frames.safetensors").write_bytes(pickled(marker))
    with pytest.raises(UserError) as e:
        load_split(split_folder)
    assert "frames.safetensors" in one_line(e.value)


# ------------------------------------------------------------------------------------ saved models


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """One small saved model of each kind genaug loads, to be copied and tampered with per test."""
    from diffusers import DDPMScheduler
    from transformers import ViTConfig, ViTModel

    from genaug import mae
    from genaug.config import DDPMConfig
    from genaug.generators import ddpm, pix2pix

    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    model = mae.build(MAEConfig(preset="micro", patch_size=4), 16, 3)
    model.save_pretrained(root / "mae")
    mae.Normalizer([0.5] * 3, [0.25] * 3).save(root / "mae", 16)
    unet = ddpm.build_unet(DDPMConfig(block_out_channels=[8, 16], attention_levels=[]), 8, 3)
    ddpm.save(root / "ddpm", unet, DDPMScheduler(num_train_timesteps=50))
    vit = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32)
    ViTModel(vit, add_pooling_layer=False).save_pretrained(root / "vit")
    cfg = Pix2PixConfig(ngf=4, ndf=4, num_downs=3, d_layers=1)
    pix2pix.save(root / "translator" / "model", cfg, pix2pix.build(cfg, 3, 1), 3, 1, image_size=16, resize="squash")
    return root


def cli(*args) -> None:
    """Run genaug; exit 2 -> its one-line UserError raised here, a crash -> its exception raised here."""
    from genaug.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code == 2:
        assert "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        raise UserError(lines[0].removeprefix("error: "))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    raise AssertionError(f"exit {result.exit_code} with a payload in place of the weights: {result.output}")


def _mae_eval(folder: Path, tmp_path: Path):
    from genaug.study.stages import MAEPredictor

    MAEPredictor(folder, "cpu")


def _mae_init(folder: Path, tmp_path: Path):
    from genaug import mae

    mae.build(MAEConfig(init=str(folder)), 16, 3)


def _ddpm_sample(folder: Path, tmp_path: Path):
    cli("sample", folder.parent.parent, "--n", 1, "--sampler", "ddim", "--steps", 2, "--device", "cpu",
        "--out", tmp_path / "samples")


def _vit_init(folder: Path, tmp_path: Path):
    from genaug.generators import vit_translator

    vit_translator.build_encoder(VitTranslatorConfig(init=str(folder)), 3, 16)


def _feature_space(folder: Path, tmp_path: Path):
    from genaug.analysis.fidelity import feature_extractor

    feature_extractor(str(folder), "cpu")


def _translate(folder: Path, tmp_path: Path):
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    cli("translate", folder.parent, tmp_path / "a.png", "--out", tmp_path / "thermal", "--device", "cpu")


# loader -> (what genaug runs, the saved model's folder in `saved`, its weights file, the pickle name beside it)
LOADERS = {
    "mae eval (study/stages.py MAEPredictor)": (_mae_eval, "mae", "model.safetensors", "pytorch_model.bin"),
    "mae.init folder (mae.build)": (_mae_init, "mae", "model.safetensors", "pytorch_model.bin"),
    "genaug sample (generators/ddpm.py sample)": (_ddpm_sample, "ddpm/pipeline/unet",
                                                  "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vit_translator.init folder (build_encoder)": (_vit_init, "vit", "model.safetensors", "pytorch_model.bin"),
    "quality.feature_space folder (feature_extractor)": (_feature_space, "vit", "model.safetensors",
                                                         "pytorch_model.bin"),
    "genaug translate (load_translator)": (_translate, "translator/model", "weights.safetensors", "pytorch_model.bin"),
}
LAYOUTS = ["pickle as the safetensors file", "torch.save file as the safetensors file",
           "pickle .bin beside a pickled safetensors file", "pickle .bin instead of the safetensors file"]


def tamper(saved: Path, tmp_path: Path, loader: str, layout: str, marker: Path) -> Path:
    """A copy of the saved model with the payload laid out as `layout`; -> the folder the loader is given."""
    _, where, weights, beside = LOADERS[loader]
    top = where.split("/")[0]
    shutil.copytree(saved / top, tmp_path / top)
    folder = tmp_path / where
    if layout == "pickle as the safetensors file":
        (folder / weights).write_bytes(pickled(marker))
    elif layout == "torch.save file as the safetensors file":
        (folder / weights).write_bytes(torch_saved(marker))
    elif layout == "pickle .bin beside a pickled safetensors file":
        (folder / weights).write_bytes(pickled(marker))
        (folder / beside).write_bytes(torch_saved(marker))
    else:
        (folder / weights).unlink()
        (folder / beside).write_bytes(torch_saved(marker))
    return folder


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("loader", list(LOADERS))
def test_a_pickle_in_place_of_weights_is_never_run(saved, tmp_path, marker, unpickling, loader, layout):
    folder = tamper(saved, tmp_path, loader, layout, marker)
    with pytest.raises(Exception):
        LOADERS[loader][0](folder, tmp_path)
    assert not marker.exists()
    assert all(weights_only is True for _, weights_only in unpickling), unpickling  # never a full unpickler


def test_the_untampered_models_load(saved, tmp_path):
    """The tampered copies fail because of the payload, not because the fixtures are broken."""
    from genaug import mae
    from genaug.analysis.fidelity import feature_extractor
    from genaug.generators import vit_translator
    from genaug.generators.translators import load_translator
    from genaug.study.stages import MAEPredictor

    MAEPredictor(saved / "mae", "cpu")
    mae.build(MAEConfig(init=str(saved / "mae")), 16, 3)
    vit_translator.build_encoder(VitTranslatorConfig(init=str(saved / "vit")), 3, 16)
    feature_extractor(str(saved / "vit"), "cpu")
    load_translator(saved / "translator")
    from genaug.cli import app

    result = CliRunner().invoke(app, ["sample", str(saved / "ddpm"), "--n", "1", "--sampler", "ddim", "--steps", "2",
                                      "--device", "cpu", "--out", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output


def _refusal_cases():
    for loader in LOADERS:
        for layout in LAYOUTS:
            yield pytest.param(loader, layout, id=f"{loader}-{layout}")


@pytest.mark.parametrize("loader, layout", list(_refusal_cases()))
def test_a_pickle_in_place_of_weights_is_refused_in_one_line_unread(saved, tmp_path, marker, unpickling, loader,
                                                                      layout):
    folder = tamper(saved, tmp_path, loader, layout, marker)
    with pytest.raises(UserError) as e:
        LOADERS[loader][0](folder, tmp_path)
    one_line(e.value)
    assert unpickling == [], f"unpickled (weights_only or not): {unpickling}"
    assert not marker.exists()


# ------------------------------------------------------------------------------------ the source itself

# call -> the keyword (and value) that makes it safe; None: no keyword does
GUARDED = {"torch.load": ("weights_only", True), "torch.serialization.load": ("weights_only", True),
           "np.load": ("allow_pickle", False), "numpy.load": ("allow_pickle", False)}
FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def unpickling_calls(source: str, filename: str = "<src>") -> list[str]:
    """Every call in `source` that can unpickle: 'file:line: what' (empty when there is none)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{where}: from {module} import ...")
            elif module in ("torch", "torch.serialization", "numpy") and any(a.name == "load" for a in node.names):
                found.append(f"{where}: from {module} import load (unchecked alias)")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name.split(".")[0] in FORBIDDEN_MODULES or name.endswith("read_pickle"):
                found.append(f"{where}: {name}(...)")
            elif name in GUARDED:
                keyword, safe = GUARDED[name]
                given = {k.arg: k.value for k in node.keywords}
                value = given.get(keyword)
                if not (isinstance(value, ast.Constant) and value.value is safe):
                    found.append(f"{where}: {name}(...) without {keyword}={safe}")
    return found


def test_the_checker_finds_every_kind_of_unpickling():
    bad = ("import pickle\nfrom dill import loads\nfrom torch import load\n"
           "torch.load(f)\ntorch.load(f, weights_only=False)\nnp.load(f)\nnp.load(f, allow_pickle=True)\n"
           "numpy.load(f, allow_pickle=flag)\npickle.loads(b)\npd.read_pickle(f)\n")
    assert len(unpickling_calls(bad)) == 10
    good = "torch.load(f, map_location='cpu', weights_only=True)\nnp.load(f, allow_pickle=False)\nload_file(p)\n"
    assert unpickling_calls(good) == []


def test_no_source_file_unpickles():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    found = [hit for path in files for hit in unpickling_calls(path.read_text(), str(path.relative_to(SRC)))]
    assert found == [], "unpickling in src/genaug:\n" + "\n".join(found)


JSON_ONLY = ("Processor", "Config", "Scheduler", "Tokenizer", "FeatureExtractor", "Normalizer")  # no weights


def weight_loads_without_safetensors_only(source: str, filename: str = "<src>") -> list[str]:
    """Every `X.from_pretrained(...)` of a model or pipeline (weights) without use_safetensors=True: one that
    falls back to torch.load of a pytorch_model.bin / diffusion_pytorch_model.bin when no safetensors is there."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
            receiver = _dotted(node.func.value).rpartition(".")[2]
            if any(word in receiver for word in JSON_ONLY) or receiver == "cls":
                continue
            value = {k.arg: k.value for k in node.keywords}.get("use_safetensors")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"{filename}:{node.lineno}: {receiver}.from_pretrained(...) without use_safetensors=True")
    return found


def test_the_weights_checker_tells_models_from_processors():
    code = ("ViTModel.from_pretrained(p)\ndiffusers.DDPMPipeline.from_pretrained(p, use_safetensors=True)\n"
            "AutoImageProcessor.from_pretrained(p)\nNormalizer.from_pretrained(p)\n")
    assert weight_loads_without_safetensors_only(code) == ["<src>:1: ViTModel.from_pretrained(...) without "
                                                           "use_safetensors=True"]


def test_every_weight_load_is_safetensors_only():
    found = [hit for path in sorted(SRC.rglob("*.py"))
             for hit in weight_loads_without_safetensors_only(path.read_text(), str(path.relative_to(SRC)))]
    assert found == [], "weights loaded with a pickle fallback:\n" + "\n".join(found)
