import torch

from genaug import mae
from genaug.config import MAEConfig

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


def test_training_feeds_the_model_unit_spread_inputs(tmp_path):
    """uint8 -> [0, 1] -> normalised exactly once on the way into the model during training."""
    from genaug.config import RuntimeConfig
    from genaug.engine import Trainer

    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    seen = []
    original = mae.build

    def build_and_watch(*args):
        model = original(*args)
        model.vit.embeddings.patch_embeddings.register_forward_pre_hook(lambda m, x: seen.append(x[0].detach()))
        return model

    cfg = MAEConfig(preset="micro", patch_size=4, steps=2, batch_size=8)
    trainer = Trainer(RuntimeConfig(device="cpu"), cfg.steps, tmp_path / "log.jsonl", "mae")
    mae.build = build_and_watch
    try:
        mae.train(cfg, images, mae.Normalizer.fit(images), seed=0, trainer=trainer)
    finally:
        mae.build = original
    batch = torch.cat(seen)
    assert abs(batch.std().item() - 1) < 0.1 and abs(batch.mean().item()) < 0.1


def test_non_finite_loss_stops_training_naming_stage_and_step(tmp_path):
    import pytest

    from genaug.config import RuntimeConfig
    from genaug.engine import Trainer
    from genaug.errors import UserError

    trainer = Trainer(RuntimeConfig(device="cpu", log_every=2), 10, tmp_path / "log.jsonl", "mae rgb-real-seed0")
    losses = iter([1.0, 2.0, float("nan")] + [1.0] * 7)
    with pytest.raises(UserError, match=r"mae rgb-real-seed0: loss 'loss' became non-finite by step 4"):
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
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
