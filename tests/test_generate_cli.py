"""`genaug translate` and `genaug sample`: trained generators used on their own, from the command line."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from genaug.cli import app
from genaug.config import CycleGANConfig, DDPMConfig, RuntimeConfig
from genaug.data.images import fit_square, read_rgb, to_tensor
from genaug.engine import Trainer
from genaug.generators import cyclegan, ddpm
from genaug.generators.networks import translate

from data.known_answers import bicubic_resize  # tests/data/known_answers.py

runner = CliRunner()


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


# ------------------------------------------------------------------------------------------- translate


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """A CycleGAN trained for a few steps, saved as a stage folder's model/ (16^2, 'pad' fitting)."""
    stage = tmp_path_factory.mktemp("cyclegan-stage")
    cfg = CycleGANConfig(ngf=4, ndf=4, n_blocks=1, n_downsampling=1, d_layers=1, steps=2, batch_size=2)
    rgb = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    thermal = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)
    trainer = Trainer(RuntimeConfig(device="cpu"), cfg.steps, stage / "log.jsonl", "cyclegan")
    nets, _ = cyclegan.train(cfg, rgb, thermal, seed=0, trainer=trainer, log_note=lambda note: None)
    cyclegan.save(stage / "model", cfg, nets, 3, 1, image_size=16, resize="pad")
    return stage


@pytest.fixture
def photos(tmp_path):
    """Three RGB files of other sizes than the model's (one stored grey), in a folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(folder / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image")  # skipped: not an image suffix
    return folder


def test_translate_writes_what_the_network_gives_for_the_fitted_inputs(translator, photos, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["translate", str(translator), str(photos), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "wrote 3" in result.output and str(out) in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    net = cyclegan.load_generator(translator / "model")
    names = ["a.png", "b.jpg", "c.png"]
    fitted = to_tensor(np.stack([fit_square(read_rgb(photos / name), 16, "pad") for name in names]))
    expected = translate(net, fitted)
    for name, image in zip(names, expected):
        written = Image.open(out / name.replace(".jpg", ".png"))
        assert written.mode == "L" and written.size == (16, 16)  # the model's 1-channel thermal, its side
        assert np.array_equal(np.asarray(written), image[0].numpy())


def test_translate_takes_the_model_folder_and_single_files(translator, photos, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["translate", str(translator / "model"), str(photos / "a.png"),
                                 str(photos / "b.jpg"), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_translate_user_errors_are_one_line(translator, photos, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.png").write_bytes(b"")
    (tmp_path / "dupes").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "dupes" / "a.jpg")
    cases = {
        "no images": [str(translator), str(tmp_path / "empty"), "--out", str(tmp_path / "o1")],
        "is a file": [str(translator), str(photos), "--out", str(photos / "a.png")],
        "no such file": [str(translator), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o2")],
        "unreadable image": [str(translator), str(tmp_path / "file.png"), "--out", str(tmp_path / "o3")],
        "both be written as a.png": [str(translator), str(photos), str(tmp_path / "dupes"),
                                     "--out", str(tmp_path / "o4")],
        "no translator here": [str(tmp_path / "empty"), str(photos), "--out", str(tmp_path / "o5")],
        "--device": [str(translator), str(photos), "--out", str(tmp_path / "o6"), "--device", "tpu"],
    }
    for expected, args in cases.items():
        assert expected in one_line_error(runner.invoke(app, ["translate", *args])), expected
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))


def test_load_translator_reads_any_registered_model_and_names_bad_folders(tmp_path):
    import json

    from genaug.config import Pix2PixConfig
    from genaug.errors import UserError
    from genaug.generators import pix2pix
    from genaug.generators.translators import LOADERS, load_translator

    assert set(LOADERS) == {"cyclegan", "pix2pix", "vit_translator"}
    cfg = Pix2PixConfig(ngf=4, ndf=4, num_downs=3, d_layers=1)
    torch.manual_seed(0)
    nets = pix2pix.build(cfg, 3, 1)
    pix2pix.save(tmp_path / "p2p" / "model", cfg, nets, 3, 1, image_size=16, resize="squash")
    net, config = load_translator(tmp_path / "p2p")
    assert (config["model"], config["image_size"], config["resize"]) == ("pix2pix", 16, "squash")
    rgb = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(translate(net, rgb), translate(nets["netG"].eval(), rgb))

    (tmp_path / "p2p" / "model" / "weights.safetensors").unlink()
    with pytest.raises(UserError, match="without weights.safetensors"):
        load_translator(tmp_path / "p2p")
    (tmp_path / "p2p" / "model" / "weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="weights.safetensors: unreadable"):
        load_translator(tmp_path / "p2p")
    (tmp_path / "p2p" / "model" / "config.json").write_text(json.dumps({"model": "mae"}))
    with pytest.raises(UserError, match="model = 'mae' is no translator"):
        load_translator(tmp_path / "p2p" / "model")


# ---------------------------------------------------------------------------------------------- sample


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """An untrained 8^2 DDPM saved as a ddpm stage folder (its pipeline/ inside)."""
    from diffusers import DDPMScheduler

    stage = tmp_path_factory.mktemp("ddpm-stage")
    torch.manual_seed(0)
    unet = ddpm.build_unet(DDPMConfig(block_out_channels=[8, 16], attention_levels=[]), 8, 3)
    ddpm.save(stage, unet, DDPMScheduler(num_train_timesteps=50))
    return stage


def sample(stage, out, *extra):
    return runner.invoke(app, ["sample", str(stage), "--n", "3", "--sampler", "ddim", "--steps", "2",
                               "--batch-size", "2", "--device", "cpu", "--out", str(out), *extra])


def pngs(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.iterdir())}


def test_sample_writes_n_pngs_reproducibly_by_seed(pipeline, tmp_path):
    result = sample(pipeline, tmp_path / "a", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert "wrote 3" in result.output
    first = pngs(tmp_path / "a")
    assert list(first) == ["sample_000000.png", "sample_000001.png", "sample_000002.png"]
    assert all(image.shape == (8, 8, 3) and image.dtype == np.uint8 for image in first.values())
    assert sample(pipeline / "pipeline", tmp_path / "b", "--seed", "5").exit_code == 0  # the pipeline folder itself
    assert all(np.array_equal(first[k], v) for k, v in pngs(tmp_path / "b").items())
    assert sample(pipeline, tmp_path / "c", "--seed", "6").exit_code == 0
    assert not np.array_equal(first["sample_000000.png"], pngs(tmp_path / "c")["sample_000000.png"])


def test_sample_resizes_and_says_how(pipeline, tmp_path):
    result = sample(pipeline, tmp_path / "small", "--seed", "5")
    result = sample(pipeline, tmp_path / "big", "--seed", "5", "--size", "12")
    assert result.exit_code == 0 and "bicubic" in result.output, result.output
    small, big = pngs(tmp_path / "small"), pngs(tmp_path / "big")
    assert all(image.shape == (12, 12, 3) for image in big.values())
    # the same seed's 8-pixel samples, enlarged by an independent statement of "bicubic, antialiased"
    expected = bicubic_resize(np.stack(list(small.values())).transpose(0, 3, 1, 2), 12).transpose(0, 2, 3, 1)
    difference = np.abs(np.stack(list(big.values())).astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01  # at most a float rounding tie apart


def test_sample_user_errors_are_one_line(pipeline, tmp_path):
    (tmp_path / "file").write_text("")
    assert "--sampler" in one_line_error(sample(pipeline, tmp_path / "o", "--sampler", "euler"))
    assert "--steps" in one_line_error(
        runner.invoke(app, ["sample", str(pipeline), "--n", "2", "--sampler", "ddim", "--steps", "0",
                            "--out", str(tmp_path / "o")]))
    assert "--steps" in one_line_error(
        runner.invoke(app, ["sample", str(pipeline), "--n", "2", "--sampler", "ddim", "--steps", "51",
                            "--out", str(tmp_path / "o")]))
    assert "no DDPM pipeline" in one_line_error(sample(tmp_path, tmp_path / "o"))
    assert "is a file" in one_line_error(sample(pipeline, tmp_path / "file"))
    assert not (tmp_path / "o").exists()


def test_sample_needs_only_the_model_n_and_out_dpmsolver_20_steps_by_default(pipeline, tmp_path, monkeypatch):
    asked = []

    def spy(pipeline_dir, n, sampler, steps, batch_size, seed, device, on_batch):
        asked.append((sampler, steps))  # the real sampler runs in the thermal test below
        return torch.zeros((n, 3, 8, 8), dtype=torch.uint8)

    monkeypatch.setattr(ddpm, "sample", spy)
    result = runner.invoke(app, ["sample", str(pipeline), "--n", "2", "--device", "cpu", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert asked == [("dpmsolver++", 20)]
    assert "RGB 8x8" in result.output and "dpmsolver++, 20 steps, seed 0" in result.output
    assert len(pngs(tmp_path / "d")) == 2


@pytest.fixture(scope="module")
def thermal_pipeline(tmp_path_factory):
    """A 1-channel (thermal) DDPM trained two steps on 8^2 images, with 10 training timesteps (fewer than
    the default 20 sampling steps), saved as a ddpm stage folder as the study saves it (EMA pipeline/)."""
    stage = tmp_path_factory.mktemp("thermal-ddpm-stage")
    cfg = DDPMConfig(block_out_channels=[8, 16], attention_levels=[], steps=2, batch_size=2, warmup_steps=0,
                     train_timesteps=10)
    thermal = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(RuntimeConfig(device="cpu"), cfg.steps, stage / "log.jsonl", "ddpm")
    unet, ema_unet, scheduler, _ = ddpm.train(cfg, thermal, seed=0, trainer=trainer)
    assert unet.config.in_channels == unet.config.out_channels == 1
    ddpm.save(stage, unet, scheduler, ema_unet)
    return stage


def test_sample_writes_a_thermal_ddpms_samples_as_grayscale_pngs(thermal_pipeline, tmp_path):
    out = tmp_path / "thermal"
    result = runner.invoke(app, ["sample", str(thermal_pipeline), "--n", "2", "--device", "cpu", "--out", str(out),
                                 "--seed", "2"])
    assert result.exit_code == 0, result.output
    # the default 20 steps are more than its 10 training timesteps: it takes the most DPM-Solver++ can,
    # 9 (all 10 fail inside diffusers with "leading" spacing), rather than refusing
    assert "grayscale 8x8" in result.output and "dpmsolver++, 9 steps" in result.output
    expected = ddpm.sample(thermal_pipeline / "pipeline", 2, "dpmsolver++", 9, 64, 2, "cpu")
    assert expected.shape == (2, 1, 8, 8)
    for i in range(2):
        written = Image.open(out / f"sample_{i:06d}.png")
        assert written.mode == "L" and written.size == (8, 8)
        assert np.array_equal(np.asarray(written), expected[i, 0].numpy())
    assert not torch.equal(expected[0], expected[1])
    error = one_line_error(runner.invoke(app, ["sample", str(thermal_pipeline), "--n", "1", "--steps", "10",
                                              "--out", str(tmp_path / "o")]))
    assert "--steps 10: dpmsolver++ takes at most 9 of the 10 timesteps" in error
