import json

import pytest
import torch

from genaug.config import Pix2PixConfig, RuntimeConfig
from genaug.data.images import to_unit
from genaug.data.sources import ScenesSource
from genaug.config import DataConfig
from genaug.engine import Trainer
from genaug.generators import pix2pix
from genaug.generators.networks import UnetGenerator, translate


def held_out_l1(fake: torch.Tensor, real: torch.Tensor) -> float:
    return (to_unit(fake) - to_unit(real)).abs().mean().item()


def test_unet_generator_shapes_and_skips():
    net = UnetGenerator(3, 1, num_downs=4, ngf=4)
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1, 32, 32) and out.abs().max() <= 1
    assert net.up[0][1].in_channels == 32 and net.up[1][1].in_channels == 2 * 16  # skip doubles width


def test_trained_pix2pix_beats_untrained_and_grayscale(tmp_path):
    """Held-out L1 to the real thermal frame: trained < untrained, and trained < grayscale of the RGB."""
    data = DataConfig(image_size=32, scenes={"n_frames": 120})
    frames = ScenesSource(data, seed=0).load(ScenesSource(data, seed=0).scan().frames)
    train_rgb, train_thermal = frames.rgb[:96], frames.thermal[:96]
    test_rgb, test_thermal = frames.rgb[96:], frames.thermal[96:]
    cfg = Pix2PixConfig(ngf=8, ndf=8, num_downs=3, d_layers=2, steps=120, batch_size=8, lr=1e-3)

    torch.manual_seed(0)
    untrained = pix2pix.build(cfg, 3, 1)["netG"].eval()
    trainer = Trainer(RuntimeConfig(device="cpu", log_every=20), cfg.steps, tmp_path / "log.jsonl", "pix2pix")
    nets, history = pix2pix.train(cfg, train_rgb, train_thermal, seed=0, trainer=trainer)
    assert history[-1]["G_L1"] < history[0]["G_L1"]

    trained_l1 = held_out_l1(translate(nets["netG"].eval(), test_rgb), test_thermal)
    untrained_l1 = held_out_l1(translate(untrained, test_rgb), test_thermal)
    gray = (to_unit(test_rgb) * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    gray_l1 = (gray - to_unit(test_thermal)).abs().mean().item()
    assert trained_l1 < untrained_l1 and trained_l1 < gray_l1, (trained_l1, untrained_l1, gray_l1)

    pix2pix.save(tmp_path / "model", cfg, nets, 3, 1, image_size=32, resize="crop")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model"] == "pix2pix" and (config["image_size"], config["resize"]) == (32, "crop")
    assert torch.equal(translate(pix2pix.load_generator(tmp_path / "model"), test_rgb),
                       translate(nets["netG"].eval(), test_rgb))


class Interrupted(Exception):
    pass


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    """Killed after the checkpoint at step 3, then re-run: the same weights and log as one whole run
    (dropout draws from torch's global RNG, batches and flips from the pair sampler's)."""
    rgb = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    thermal = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    cfg = Pix2PixConfig(ngf=4, ndf=4, num_downs=3, d_layers=1, steps=6, batch_size=2)
    runtime = RuntimeConfig(device="cpu", log_every=2, checkpoint_every=3)

    def run(folder, on_step=None):
        folder.mkdir(exist_ok=True)
        trainer = Trainer(runtime, cfg.steps, folder / "log.jsonl", "pix2pix", on_step,
                          checkpoint_dir=folder / "checkpoints")
        nets, _ = pix2pix.train(cfg, rgb, thermal, seed=0, trainer=trainer)
        return nets, trainer

    whole, _ = run(tmp_path / "whole")

    def interrupt(step, row):
        if step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(tmp_path / "resumed", interrupt)
    resumed, trainer = run(tmp_path / "resumed")
    assert trainer.resumed_from == 3
    for name in ("netG", "netD"):
        for (key, a), b in zip(whole[name].state_dict().items(), resumed[name].state_dict().values()):
            assert torch.equal(a, b), f"{name}.{key}"
    assert (tmp_path / "resumed" / "log.jsonl").read_text() == (tmp_path / "whole" / "log.jsonl").read_text()
