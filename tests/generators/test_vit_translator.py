import json
import shutil
import time

import pytest
import torch
from torch import nn

from genaug.config import RuntimeConfig, VitTranslatorConfig
from genaug.data.images import from_unit, to_unit
from genaug.engine import Trainer
from genaug.errors import UserError
from genaug.generators import vit_translator
from genaug.generators.networks import translate


@pytest.fixture(autouse=True)
def one_thread():
    """These nets are tiny, so threads buy nothing; on a busy 2-core machine OpenMP's oversubscription
    made a 30-step run take 48 s with 2 threads against 0.4 s with one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = dict(patch_size=4, hidden_size=32, layers=2, heads=4, decoder_channels=16)


def toy_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random RGB (4x4 noise upsampled to 16x16) and its grey as the aligned 'thermal' frame."""
    g = torch.Generator().manual_seed(seed)
    rgb = nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=16, mode="bilinear")
    grey = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return from_unit(rgb), from_unit(grey)


def l1(fake: torch.Tensor, real: torch.Tensor) -> float:
    return (to_unit(fake) - to_unit(real)).abs().mean().item()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A local 'pretrained' ViT folder: trained at side 32 (so side 16 interpolates), own mean / std."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(1)
    folder = tmp_path / "tiny-vit"
    config = ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=4, intermediate_size=64)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.4, 0.45, 0.5], "image_std": [0.2, 0.25, 0.3]}))
    return folder


def test_scratch_shapes_range_and_decoder_stages():
    torch.manual_seed(0)
    net = vit_translator.build(VitTranslatorConfig(init="scratch", **TINY), 3, 1, 16)["netG"]
    assert net.init_used == "scratch"
    out = net(10 * torch.randn(2, 3, 16, 16))  # far outside [-1, 1]: tanh still bounds it
    assert out.shape == (2, 1, 16, 16) and out.abs().max() <= 1
    convs = [m for m in net.decoder if isinstance(m, nn.Conv2d)]
    # patch 4 -> log2(4) = 2 upsampling stages, widths 16 then 8, then the conv to 1 channel
    assert [(c.in_channels, c.out_channels) for c in convs] == [(32, 16), (16, 8), (8, 1)]
    assert sum(isinstance(m, nn.Upsample) for m in net.decoder) == 2


def test_trained_beats_untrained_and_constant_then_round_trips(tmp_path):
    """Held-out L1 to the real frame: trained < untrained, and < the best constant (it uses its input)."""
    train_rgb, train_grey = toy_pairs(64, seed=0)
    test_rgb, test_grey = toy_pairs(16, seed=1)
    cfg = VitTranslatorConfig(init="scratch", steps=80, batch_size=16, lr=1e-3, **TINY)

    torch.manual_seed(0)
    untrained = vit_translator.build(cfg, 3, 1, 16)["netG"].eval()
    trainer = Trainer(RuntimeConfig(device="cpu", log_every=20), cfg.steps, tmp_path / "log.jsonl", "vit_translator")
    nets, history = vit_translator.train(cfg, train_rgb, train_grey, seed=0, trainer=trainer)
    assert history[-1]["mse"] < history[0]["mse"]

    trained = nets["netG"].eval()
    trained_l1 = l1(translate(trained, test_rgb), test_grey)
    untrained_l1 = l1(translate(untrained, test_rgb), test_grey)
    constant_l1 = (to_unit(test_grey) - to_unit(train_grey).median()).abs().mean().item()
    assert trained_l1 < untrained_l1 and trained_l1 < constant_l1, (trained_l1, untrained_l1, constant_l1)

    vit_translator.save(tmp_path / "model", cfg, nets, 3, 1, 16, "squash")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["model"] == "vit_translator" and saved["init_used"] == "scratch" and saved["resize"] == "squash"
    loaded = vit_translator.load_generator(tmp_path / "model")
    assert not loaded.training and loaded.init_used == "scratch"
    assert torch.equal(translate(loaded, test_rgb), translate(trained, test_rgb))


def test_pretrained_folder_normalises_interpolates_and_reloads_without_it(tmp_path, tiny_checkpoint):
    from transformers import ViTModel

    cfg = VitTranslatorConfig(init=str(tiny_checkpoint), patch_size=8, decoder_channels=16)  # patch: checkpoint's
    net = vit_translator.build(cfg, 3, 1, 16)["netG"].eval()
    assert net.init_used == str(tiny_checkpoint) and net.patch_size == 4
    assert torch.allclose(net.pixel_mean.flatten(), torch.tensor([0.4, 0.45, 0.5]))
    original = ViTModel.from_pretrained(tiny_checkpoint, add_pooling_layer=False)
    weight = "embeddings.patch_embeddings.projection.weight"
    assert torch.equal(net.encoder.state_dict()[weight], original.state_dict()[weight])  # not random
    # Callers pass [-1, 1]; the module applies the checkpoint's own normalisation before the encoder.
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    seen = {}
    net.encoder.register_forward_hook(lambda m, args, kwargs, out: seen.update(kwargs), with_kwargs=True)
    out = net(x)
    mean, std = torch.tensor([0.4, 0.45, 0.5]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(seen["pixel_values"], ((x + 1) / 2 - mean) / std)
    assert seen["interpolate_pos_encoding"] is True and out.shape == (2, 1, 16, 16)

    images, _ = toy_pairs(4, seed=2)
    vit_translator.save(tmp_path / "model", cfg, {"netG": net}, 3, 1, 16, "crop")
    shutil.rmtree(tiny_checkpoint)  # reloading needs neither the checkpoint nor the network
    loaded = vit_translator.load_generator(tmp_path / "model")
    assert loaded.init_used == str(tiny_checkpoint)
    assert torch.equal(translate(loaded, images), translate(net, images))


def test_auto_falls_back_to_scratch_when_absent_and_uses_it_when_present(monkeypatch, tmp_path, tiny_checkpoint):
    cfg = VitTranslatorConfig(init="auto", **TINY)
    monkeypatch.setattr(vit_translator, "AUTO_CHECKPOINT", "genaug-test/absent-vit")
    assert vit_translator.build(cfg, 3, 1, 16)["netG"].init_used == "scratch"
    (tmp_path / "config-only").mkdir()  # partly there (no weights): as good as absent
    shutil.copy(tiny_checkpoint / "config.json", tmp_path / "config-only")
    monkeypatch.setattr(vit_translator, "AUTO_CHECKPOINT", str(tmp_path / "config-only"))
    assert vit_translator.build(cfg, 3, 1, 16)["netG"].init_used == "scratch"
    monkeypatch.setattr(vit_translator, "AUTO_CHECKPOINT", str(tiny_checkpoint))
    assert vit_translator.build(cfg, 3, 1, 16)["netG"].init_used == str(tiny_checkpoint)


@pytest.mark.parametrize("init", ["genaug-test/no-such-vit", "/nonexistent/vit-folder"])
def test_missing_named_init_fails_fast_with_one_line(init):
    start = time.perf_counter()
    with pytest.raises(UserError) as error:
        vit_translator.build(VitTranslatorConfig(init=init), 3, 1, 32)
    assert time.perf_counter() - start < 1.0
    message = str(error.value)
    assert f"vit_translator.init = '{init}'" in message and "scratch" in message and "\n" not in message


def test_named_init_that_is_there_but_incomplete_is_a_user_error(tmp_path, tiny_checkpoint):
    (tmp_path / "config-only").mkdir()
    shutil.copy(tiny_checkpoint / "config.json", tmp_path / "config-only")
    with pytest.raises(UserError, match="vit_translator.init = .*config-only': cannot load it") as error:
        vit_translator.build(VitTranslatorConfig(init=str(tmp_path / "config-only")), 3, 1, 32)
    assert "\n" not in str(error.value)


def test_pretrained_side_must_be_a_multiple_of_its_patch(tiny_checkpoint):
    with pytest.raises(UserError, match="image_size = 18"):
        vit_translator.build(VitTranslatorConfig(init=str(tiny_checkpoint)), 3, 1, 18)


@pytest.mark.parametrize("patch_size", [3, 6])
def test_patch_size_not_a_power_of_two_is_rejected(patch_size):
    with pytest.raises(UserError, match=f"vit_translator.patch_size = {patch_size}.*power of two"):
        vit_translator.build(VitTranslatorConfig(init="scratch", patch_size=patch_size), 3, 1, 48)


@pytest.mark.parametrize("change, side, match", [
    ({"patch_size": 8}, 20, "patch_size = 8 does not divide data.image_size = 20"),
    ({"hidden_size": 30, "heads": 4}, 16, "heads = 4 must divide vit_translator.hidden_size = 30"),
])
def test_scratch_sizes_that_cannot_work_are_rejected(change, side, match):
    with pytest.raises(UserError, match=match):
        vit_translator.build(VitTranslatorConfig(init="scratch", **change), 3, 1, side)


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    """The state handed to the trainer is complete: net, optimiser and the pair sampler's RNG."""
    images_a, images_b = toy_pairs(16, seed=3)
    cfg = VitTranslatorConfig(init="scratch", steps=12, batch_size=4, lr=1e-3, **TINY)

    def run(folder):
        runtime = RuntimeConfig(device="cpu", log_every=4, checkpoint_every=6)
        trainer = Trainer(runtime, cfg.steps, folder / "log.jsonl", "vit_translator", checkpoint_dir=folder / "ckpt")
        return (*vit_translator.train(cfg, images_a, images_b, seed=0, trainer=trainer), trainer.resumed_from)

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    straight, straight_history, _ = run(tmp_path / "a")
    run(tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "ckpt" / "checkpoint-12")  # as if killed between steps 6 and 12
    resumed, resumed_history, resumed_from = run(tmp_path / "b")
    assert resumed_from == 6 and resumed_history == straight_history
    for (name, a), b in zip(straight["netG"].state_dict().items(), resumed["netG"].state_dict().values()):
        assert torch.equal(a, b), name
