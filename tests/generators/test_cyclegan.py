import torch

from genaug.config import CycleGANConfig, RuntimeConfig
from genaug.engine import Trainer
from genaug.generators import cyclegan
from genaug.generators.networks import ImagePool, PatchDiscriminator, ResnetGenerator

TINY = CycleGANConfig(ngf=4, ndf=4, n_blocks=1, n_downsampling=1, d_layers=1, steps=4, batch_size=2, pool_size=3)


def test_generator_maps_channels_and_stays_in_tanh_range():
    net = ResnetGenerator(3, 1, ngf=4, n_blocks=1, n_downsampling=2)
    out = net(torch.randn(2, 3, 16, 16) * 5)
    assert out.shape == (2, 1, 16, 16) and out.abs().max() <= 1


def test_patch_discriminator_gives_a_grid_of_logits():
    assert PatchDiscriminator(1, ndf=4, n_layers=2)(torch.randn(2, 1, 32, 32)).shape == (2, 1, 6, 6)


def test_image_pool_fills_then_mixes_history():
    pool = ImagePool(2, seed=0)
    first = torch.zeros(2, 1, 2, 2)
    assert torch.equal(pool.query(first), first)  # filling: returns what it got
    later = torch.ones(8, 1, 2, 2)
    out = pool.query(later)
    assert out.shape == later.shape and (out == 0).any() and (out == 1).any()
    assert torch.equal(ImagePool(0, seed=0).query(later), later)


def test_linear_decay_holds_then_reaches_zero():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = cyclegan.linear_decay(optimizer, steps=10, decay_start=0.5)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:6] == [1.0] * 6 and rates[6] < 1.0 and optimizer.param_groups[0]["lr"] == 0.0


def test_train_save_load_translate_round_trip(tmp_path):
    rgb = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    thermal = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8)
    notes = []
    trainer = Trainer(RuntimeConfig(device="cpu", log_every=2), TINY.steps, tmp_path / "log.jsonl", "cyclegan")
    nets, history = cyclegan.train(TINY, rgb, thermal, seed=0, trainer=trainer, log_note=notes.append)
    assert [row["step"] for row in history] == [2, 4] and {"G_A", "cycle", "D_B"} <= set(history[0])
    assert notes and "identity loss off" in notes[0]  # 3 -> 1 channels
    cyclegan.save(tmp_path / "model", TINY, nets, 3, 1)
    fake = cyclegan.translate(nets["netG_A"].eval(), rgb)
    assert fake.dtype == torch.uint8 and fake.shape == (6, 1, 16, 16)
    assert torch.equal(cyclegan.translate(cyclegan.load_generator(tmp_path / "model"), rgb), fake)
