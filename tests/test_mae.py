import torch

from genaug import mae
from genaug.config import MAEConfig
from genaug.data.images import to_unit

CFG = MAEConfig(preset="micro", patch_size=4)


def test_fixed_noise_depends_only_on_image_id_and_eval_seed():
    ids = [f"scene_{i:06d}" for i in range(6)]
    full = mae.fixed_noise(ids, 64, eval_seed=3)
    assert torch.equal(mae.fixed_noise(ids[2:4], 64, eval_seed=3), full[2:4])  # batch-independent
    assert not torch.equal(mae.fixed_noise(ids, 64, eval_seed=4), full)
    assert not torch.equal(full[0], full[1])


def test_same_mask_for_two_different_models():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    noise = mae.fixed_noise([str(i) for i in range(5)], 64, eval_seed=0)
    normalizer = mae.Normalizer.fit(images)
    torch.manual_seed(0)
    model_a = mae.build(CFG, 32, 3).eval()
    torch.manual_seed(1)
    model_b = mae.build(MAEConfig(preset="tiny", patch_size=4), 32, 3).eval()
    pred_a, mask_a = mae.reconstruct(model_a, normalizer, images, noise)
    pred_b, mask_b = mae.reconstruct(model_b, normalizer, images, noise)
    assert torch.equal(mask_a, mask_b)
    assert not torch.allclose(pred_a, pred_b)
    assert torch.equal(mask_a, mae.mask_from_noise(noise, 0.75))  # our rule is the model's rule
    assert mask_a.sum(dim=1).tolist() == [48.0] * 5


def test_normalizer_round_trip_and_single_rescale(tmp_path):
    images = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)
    normalizer = mae.Normalizer.fit(images)
    unit = images.float() / 255
    model_input = normalizer.to_model(unit)
    # uint8 is rescaled exactly once: the normalised set has unit spread, not 1/255 of it.
    assert abs(model_input.std().item() - 1) < 0.05 and abs(model_input.mean().item()) < 0.05
    assert torch.allclose(normalizer.to_unit(model_input), unit, atol=1e-6)
    normalizer.save(tmp_path, 16)
    loaded = mae.Normalizer.load(tmp_path)
    assert torch.allclose(loaded.mean, normalizer.mean) and torch.allclose(loaded.std, normalizer.std)


def test_masked_errors_count_only_masked_pixels():
    target = torch.zeros(1, 1, 8, 8)
    prediction = torch.zeros(1, 1, 8, 8)
    mask = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # patch 4: top-left quarter hidden
    prediction[..., 4:, 4:] = 1.0  # wrong only where the model could see: must not count
    mse, psnr = mae.masked_errors(prediction, target, mask, patch=4)
    assert mse.item() == 0.0
    prediction[..., :4, :4] = 0.5
    mse, psnr = mae.masked_errors(prediction, target, mask, patch=4)
    assert abs(mse.item() - 0.25) < 1e-7
    # PSNR of visible-as-given + predicted-where-masked: only the masked quarter's error counts
    assert abs(psnr.item() - (-10 * torch.log10(torch.tensor(16 * 0.25 / 64))).item()) < 1e-4


def test_masked_patches_are_numbered_row_by_row():
    """ViTMAE numbers patches row by row (patchify: index = row * grid + column): on a 2 x 2 grid, patch 1
    is the top-right quarter and patch 2 the bottom-left one. Only the hidden patch's pixels are scored."""
    target = torch.zeros(1, 1, 8, 8)
    top_right, bottom_left = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    top_right[..., :4, 4:] = 1.0
    bottom_left[..., 4:, :4] = 1.0
    hide_1 = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert torch.equal(mae.patch_mask_to_pixels(hide_1, 4, 8), top_right)
    assert mae.masked_errors(top_right * 0.5, target, hide_1, patch=4)[0].item() == 0.25
    assert mae.masked_errors(bottom_left * 0.5, target, hide_1, patch=4)[0].item() == 0.0
    hide_2 = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    assert mae.masked_errors(bottom_left * 0.5, target, hide_2, patch=4)[0].item() == 0.25


def test_reconstruction_is_in_unit_pixel_space():
    """A decoder whose output is the constant b_c for channel c (in the model's normalised space)
    reconstructs every pixel as b_c * std_c + mean_c in [0, 1] pixel space, and its masked MSE against
    black images is the mean over channels of that squared, worked out by hand here."""
    model = mae.build(CFG, 8, 3).eval()
    with torch.no_grad():
        model.decoder.decoder_pred.weight.zero_()
        # patchify layout (p, q, C): the channel varies fastest
        model.decoder.decoder_pred.bias.copy_(torch.tensor([1.0, -1.0, 0.5]).repeat(16))
    normalizer = mae.Normalizer([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    noise = mae.fixed_noise(["a", "b"], 4, eval_seed=0)
    prediction, mask = mae.reconstruct(model, normalizer, images, noise)
    expected = torch.tensor([0.7, 0.15, 0.45]).view(1, 3, 1, 1).expand(2, 3, 8, 8)  # 1*.2+.5, -1*.25+.4, .5*.3+.3
    assert torch.allclose(prediction, expected, atol=1e-6)
    assert torch.equal(mask, mae.mask_from_noise(noise, 0.75))
    mse, _ = mae.masked_errors(prediction, to_unit(images), mask, patch=4)
    assert torch.allclose(mse, torch.full((2,), (0.49 + 0.0225 + 0.2025) / 3), atol=1e-6)


def test_scratch_mae_has_sincos_positions_that_survive_save_and_load(tmp_path):
    """transformers 5.x builds scratch ViTMAEs with zero positions; `build` must put them back."""
    from transformers import ViTMAEForPreTraining

    model = mae.build(CFG, 32, 1)
    encoder_pos = model.vit.embeddings.position_embeddings
    decoder_pos = model.decoder.decoder_pos_embed
    grid = encoder_pos[0, 1:]
    assert grid.abs().sum() > 0 and decoder_pos[0, 1:].abs().sum() > 0
    assert len({tuple(row.tolist()) for row in grid}) == 64  # every patch position is distinct
    model.save_pretrained(tmp_path)
    loaded = ViTMAEForPreTraining.from_pretrained(tmp_path)
    assert torch.equal(loaded.vit.embeddings.position_embeddings, encoder_pos)
    assert torch.equal(loaded.decoder.decoder_pos_embed, decoder_pos)


def test_training_feeds_the_model_unit_spread_inputs(tmp_path, monkeypatch):
    """uint8 -> [0, 1] -> normalised exactly once on the way into the model during training."""
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    seen = watch_inputs(monkeypatch)
    cfg = MAEConfig(preset="micro", patch_size=4, steps=2, batch_size=8)
    mae.train(cfg, images, mae.Normalizer.fit(images), seed=0, trainer=cpu_trainer(tmp_path, cfg.steps))
    batch = torch.cat(seen)
    assert abs(batch.std().item() - 1) < 0.1 and abs(batch.mean().item()) < 0.1


def test_non_finite_loss_stops_training_naming_stage_and_step(tmp_path):
    import pytest

    from genaug.config import RuntimeConfig
    from genaug.engine import Trainer
    from genaug.errors import UserError

    trainer = Trainer(RuntimeConfig(device="cpu", log_every=2), 10, tmp_path / "log.jsonl", "mae", run="rgb-real-seed0")
    losses = iter([1.0, 2.0, float("nan")] + [1.0] * 7)
    with pytest.raises(UserError, match=r"mae rgb-real-seed0: loss 'loss' became non-finite at step 3 "
                                        r"\(no checkpoint to go back to\)"):
        trainer.fit(lambda i: {"loss": torch.tensor(next(losses))})
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 1  # the good window was logged


def test_resumed_mae_equals_uninterrupted(tmp_path):
    """Stopped after its step-3 checkpoint and run again, an MAE ends with the same weights and log."""
    import pytest

    from genaug.config import AugmentConfig, RuntimeConfig
    from genaug.engine import Trainer

    images = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = MAEConfig(preset="micro", patch_size=4, steps=6, batch_size=4, warmup_steps=1,
                    augment=AugmentConfig(crop_scale=[0.5, 1.0]))  # kornia's crops: the global RNG
    runtime = RuntimeConfig(device="cpu", log_every=2, checkpoint_every=3)

    trainers = []

    def run(folder, on_step=None):
        trainers.append(Trainer(runtime, cfg.steps, tmp_path / f"{folder}.jsonl", "mae", on_step, tmp_path / folder))
        return mae.train(cfg, images, mae.Normalizer.fit(images), seed=0, trainer=trainers[-1])

    whole, _ = run("a")

    def stop(i, row):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("b", stop)
    resumed, _ = run("b")
    assert trainers[-1].resumed_from == 3  # it really resumed, rather than starting again
    assert trainers[-1].step_losses == trainers[0].step_losses and len(trainers[0].step_losses["loss"]) == 6
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


# ------------------------------------------------------------------------------ pretrained MAEs (mae.init)

PROCESSOR_MEAN, PROCESSOR_STD = [0.2, 0.3, 0.4], [0.1, 0.2, 0.3]  # deliberately not ImageNet's


def save_tiny_pretrained(folder, image_size=16, processor=True):
    """A micro ViTMAE (3 channels, patch 4) saved as a pretrained model, with its own image processor."""
    from transformers import ViTImageProcessor

    torch.manual_seed(123)
    model = mae.build(CFG, image_size, 3)
    model.save_pretrained(folder)
    if processor:
        ViTImageProcessor(image_mean=PROCESSOR_MEAN, image_std=PROCESSOR_STD).save_pretrained(folder)
    return model


def watch_inputs(monkeypatch):
    """Record every pixel_values tensor the models made by mae.build receive (at the patch embedding)."""
    seen = []
    original = mae.build

    def build_and_watch(*args):
        model = original(*args)
        model.vit.embeddings.patch_embeddings.register_forward_pre_hook(lambda m, x: seen.append(x[0].detach()))
        return model

    monkeypatch.setattr(mae, "build", build_and_watch)
    return seen


def cpu_trainer(tmp_path, steps, name="log"):
    from genaug.config import RuntimeConfig
    from genaug.engine import Trainer

    return Trainer(RuntimeConfig(device="cpu"), steps, tmp_path / f"{name}.jsonl", "mae")


def expected_input(images, mean, std):
    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return (images.double() / 255 - mean) / std


def assert_each_row_is_one_of(batch, candidates):
    """Every received image equals (to float precision) one of the expected model inputs."""
    for row in batch:
        assert min((row.double() - c).abs().max().item() for c in candidates) < 1e-5


def test_scratch_model_receives_uint8_normalised_once_with_the_fitted_statistics(tmp_path, monkeypatch):
    from genaug.config import AugmentConfig

    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    unit = images.double() / 255
    fitted_mean, fitted_std = unit.mean(dim=(0, 2, 3)).tolist(), unit.std(dim=(0, 2, 3)).tolist()
    cfg = MAEConfig(preset="micro", patch_size=4, steps=2, batch_size=4, augment=AugmentConfig(hflip=False))
    normalizer = mae.normalizer_for(cfg, images)
    assert "fit on 6 real" in normalizer.source
    seen = watch_inputs(monkeypatch)
    expected = expected_input(images, fitted_mean, fitted_std)

    model, _ = mae.train(cfg, images, normalizer, seed=0, trainer=cpu_trainer(tmp_path, cfg.steps))
    assert len(seen) == 2
    assert_each_row_is_one_of(torch.cat(seen), expected)
    seen.clear()
    mae.reconstruct(model, normalizer, images, mae.fixed_noise([str(i) for i in range(6)], 16, 0))
    assert torch.allclose(seen[0].double(), expected, atol=1e-5)


def test_pretrained_model_receives_its_own_processor_normalisation_once(tmp_path, monkeypatch):
    from genaug.config import AugmentConfig

    folder = tmp_path / "pretrained"
    save_tiny_pretrained(folder)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    cfg = MAEConfig(init=str(folder), steps=2, batch_size=4, augment=AugmentConfig(hflip=False))
    normalizer = mae.normalizer_for(cfg, images)  # the model's own, not one fit on these images
    assert torch.allclose(normalizer.mean.flatten(), torch.tensor(PROCESSOR_MEAN))
    assert torch.allclose(normalizer.std.flatten(), torch.tensor(PROCESSOR_STD))
    seen = watch_inputs(monkeypatch)
    expected = expected_input(images, PROCESSOR_MEAN, PROCESSOR_STD)

    model, _ = mae.train(cfg, images, normalizer, seed=0, trainer=cpu_trainer(tmp_path, cfg.steps))
    assert_each_row_is_one_of(torch.cat(seen), expected)
    seen.clear()
    mae.reconstruct(model, normalizer, images, mae.fixed_noise([str(i) for i in range(6)], 16, 0))
    assert torch.allclose(seen[0].double(), expected, atol=1e-5)
    # The trained model's folder carries the normalisation actually used.
    model.save_pretrained(tmp_path / "trained")
    normalizer.save(tmp_path / "trained", 16)
    loaded = mae.Normalizer.load(tmp_path / "trained")
    assert torch.allclose(loaded.mean, normalizer.mean) and torch.allclose(loaded.std, normalizer.std)


def test_pretrained_without_processor_config_uses_imagenet_and_says_so(tmp_path):
    save_tiny_pretrained(tmp_path, processor=False)
    normalizer = mae.Normalizer.from_pretrained(str(tmp_path))
    assert torch.allclose(normalizer.mean.flatten(), torch.tensor(mae.IMAGENET_MEAN))
    assert torch.allclose(normalizer.std.flatten(), torch.tensor(mae.IMAGENET_STD))
    assert "ImageNet" in normalizer.source


def test_pretrained_weights_are_loaded_not_reinitialised_and_cfg_applies(tmp_path):
    saved = save_tiny_pretrained(tmp_path)
    cfg = MAEConfig(init=str(tmp_path), mask_ratio=0.5, norm_pix_loss=True, preset="base", patch_size=2)
    model = mae.build(cfg, 16, 3)  # preset and patch_size are the scratch architecture's: ignored here
    expected = saved.state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    assert model.config.mask_ratio == 0.5 and model.config.norm_pix_loss is True
    assert mae.patch_size(cfg) == 4
    assert mae.build(MAEConfig(preset="micro", patch_size=4, norm_pix_loss=True), 16, 3).config.norm_pix_loss


def test_pretrained_model_at_another_size_trains_reconstructs_and_reloads(tmp_path):
    """Saved at 16 px, used at 24 px: the positions are resized in 2-D once, as the encoder's own
    interpolate_pos_encoding would; the trained model reloads as a 24-px model."""
    from transformers import ViTMAEForPreTraining

    saved = save_tiny_pretrained(tmp_path / "pretrained", image_size=16)
    images = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    cfg = MAEConfig(init=str(tmp_path / "pretrained"), steps=2, batch_size=2, mask_ratio=0.5)
    resized = mae.build(cfg, 24, 3)
    hf_interpolated = saved.vit.embeddings.interpolate_pos_encoding(torch.zeros(1, 37, 32), 24, 24)
    assert torch.allclose(resized.vit.embeddings.position_embeddings, hf_interpolated, atol=1e-6)
    assert torch.equal(resized.vit.embeddings.patch_embeddings.projection.weight,
                       saved.vit.embeddings.patch_embeddings.projection.weight)

    normalizer = mae.normalizer_for(cfg, images)
    model, history = mae.train(cfg, images, normalizer, seed=0, trainer=cpu_trainer(tmp_path, cfg.steps))
    assert len(history) >= 1 and model.config.image_size == 24
    length = (24 // mae.patch_size(cfg)) ** 2
    noise = mae.fixed_noise([str(i) for i in range(4)], length, eval_seed=0)
    prediction, mask = mae.reconstruct(model.eval(), normalizer, images, noise)
    assert prediction.shape == images.shape and mask.shape == (4, 36)
    assert torch.equal(mask, mae.mask_from_noise(noise, 0.5))
    model.save_pretrained(tmp_path / "trained")
    reloaded = ViTMAEForPreTraining.from_pretrained(tmp_path / "trained").eval()
    assert torch.allclose(mae.reconstruct(reloaded, normalizer, images, noise)[0], prediction, atol=1e-5)
    # A model left at its native size still reconstructs other sizes (transformers' interpolate_pos_encoding).
    assert mae.reconstruct(saved.eval(), normalizer, images, noise)[0].shape == images.shape
    with __import__("pytest").raises(ValueError, match="need 36"):
        mae.reconstruct(model, normalizer, images, noise[:, :16])


def test_hub_id_is_found_in_the_local_cache_only(tmp_path, monkeypatch):
    import pytest
    from huggingface_hub import constants

    from genaug.errors import UserError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someone--tiny-mae"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    save_tiny_pretrained(repo / "snapshots" / ("0" * 40))
    cfg = MAEConfig(init="someone/tiny-mae")
    assert mae.locate(cfg.init) == repo / "snapshots" / ("0" * 40)
    mae.check_init(cfg, 16, 3)
    assert torch.allclose(mae.Normalizer.from_pretrained(cfg.init).mean.flatten(), torch.tensor(PROCESSOR_MEAN))
    assert mae.build(cfg, 16, 3).config.patch_size == 4
    with pytest.raises(UserError, match=r"mae.init = 'someone/other' is not on this machine.*hf download someone/oth"):
        mae.check_init(MAEConfig(init="someone/other"), 16, 3)


def test_missing_init_fails_in_one_line_in_well_under_a_second_without_transformers(tmp_path):
    """Offline, a model that is not on this machine: one line naming mae.init and the fix, before
    transformers is even imported (run in a fresh interpreter so nothing is imported already)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from genaug import mae\n"
        "from genaug.config import MAEConfig\n"
        "from genaug.errors import UserError\n"
        "for init in ('facebook/vit-mae-base', './no/such/folder'):\n"
        "    start = time.perf_counter()\n"
        "    try:\n"
        "        mae.check_init(MAEConfig(init=init), 224, 3)\n"
        "    except UserError as err:\n"
        "        print(repr(str(err)), time.perf_counter() - start)\n"
        "print('transformers' in sys.modules)\n"
    )
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3, out
    for line, init in zip(lines, ("facebook/vit-mae-base", "./no/such/folder")):
        message, seconds = line.rsplit(" ", 1)
        message = eval(message)  # the repr of the one message
        assert "\n" not in message and f"mae.init = '{init}'" in message and '"scratch"' in message
        assert float(seconds) < 0.5
    assert "hf download facebook/vit-mae-base" in lines[0]
    assert lines[2] == "False"  # transformers was never imported


def test_build_refuses_missing_init_before_loading_anything(tmp_path):
    import pytest

    from genaug.errors import UserError

    cfg = MAEConfig(init=str(tmp_path / "absent"))
    with pytest.raises(UserError, match=r"mae.init = '.*absent'"):
        mae.build(cfg, 16, 3)
    with pytest.raises(UserError, match="mae.init"):
        mae.normalizer_for(cfg, torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(UserError, match="without config.json"):
        mae.check_init(MAEConfig(init=str(tmp_path)), 16, 3)


def test_channel_and_size_mismatches_say_what_to_set(tmp_path):
    import pytest

    from genaug.errors import UserError

    save_tiny_pretrained(tmp_path)
    cfg = MAEConfig(init=str(tmp_path))
    with pytest.raises(UserError, match=r"3-channel images but these images have 1; set data.thermal_channels = 3"):
        mae.check_init(cfg, 16, 1)
    with pytest.raises(UserError, match=r"data.image_size = 18 is not a multiple of the patch size 4"):
        mae.check_init(cfg, 18, 3)
    with pytest.raises(UserError, match=r"mae.mask_ratio = 0.75 hides them all"):
        mae.check_init(cfg, 4, 3)
    mae.check_init(cfg, 32, 3)


def test_norm_pix_unnormalisation_on_a_known_patch():
    patch = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])  # mean 1.5, unbiased variance 5/3
    normalised = (patch - 1.5) / (5 / 3 + 1e-6) ** 0.5
    assert torch.allclose(mae.unnormalize_patches(normalised, patch), patch, atol=1e-6)
    assert torch.allclose(mae.unnormalize_patches(torch.zeros_like(patch), patch), torch.full_like(patch, 1.5))
    # ViTMAE's own patchify and norm_pix_loss target, undone exactly
    model = mae.build(MAEConfig(preset="micro", patch_size=4, norm_pix_loss=True), 8, 3)
    pixels = torch.randn(2, 3, 8, 8)
    target = model.patchify(pixels)
    normalised = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    assert torch.allclose(model.unpatchify(mae.unnormalize_patches(normalised, target), (8, 8)), pixels, atol=1e-5)
    # patch_mean_fill is exactly what a norm_pix_loss model predicting zeros reconstructs
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    normalizer = mae.Normalizer([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    filled = mae.patch_mean_fill(images, normalizer, 4)
    zeros = mae.unnormalize_patches(torch.zeros(2, 4, 48), model.patchify(normalizer.to_model(to_unit(images))))
    assert torch.allclose(filled, normalizer.to_unit(model.unpatchify(zeros, (8, 8))), atol=1e-6)


def ramps(n, side=16, seed=0):
    """Grey left-to-right ramps, random offset and slope per image: every patch has the same
    normalised shape, which an MAE with norm_pix_loss can learn in a few dozen steps."""
    generator = torch.Generator().manual_seed(seed)
    offset = torch.rand(n, 1, 1, 1, generator=generator) * 0.4
    slope = 0.2 + torch.rand(n, 1, 1, 1, generator=generator) * 0.4
    x = torch.linspace(0, 1, side).view(1, 1, 1, side)
    return ((offset + slope * x).expand(n, 3, side, side) * 255).round().to(torch.uint8)


def test_norm_pix_loss_model_trains_and_reconstructs_in_pixel_space(tmp_path):
    train_images, test_images = ramps(64, seed=0), ramps(8, seed=1)
    cfg = MAEConfig(preset="micro", patch_size=4, norm_pix_loss=True, steps=40, batch_size=16, lr=3e-3,
                    warmup_steps=0)
    normalizer = mae.normalizer_for(cfg, train_images)
    model, history = mae.train(cfg, train_images, normalizer, seed=0, trainer=cpu_trainer(tmp_path, cfg.steps))
    assert model.config.norm_pix_loss
    noise = mae.fixed_noise([str(i) for i in range(8)], 16, eval_seed=0)
    prediction, mask = mae.reconstruct(model.eval(), normalizer, test_images, noise)
    hidden = mae.patch_mask_to_pixels(mask, 4, 16).expand_as(prediction).bool()
    assert prediction[hidden].min() > -0.05 and prediction[hidden].max() < 1.05  # un-normalised to [0, 1]
    target = to_unit(test_images)
    mse, _ = mae.masked_errors(prediction, target, mask, 4)
    floor, _ = mae.masked_errors(mae.patch_mean_fill(test_images, normalizer, 4), target, mask, 4)
    dataset_mean = to_unit(train_images).mean(dim=(0, 2, 3)).view(1, -1, 1, 1).expand_as(target)
    mean_predictor, _ = mae.masked_errors(dataset_mean, target, mask, 4)
    assert mse.mean() < 0.5 * floor.mean() < mean_predictor.mean()
