"""README claims about generated images that the micro study does not pin down, checked on the stages
themselves (run_ddpm, run_mae on a hand-made split folder, no study):

- `ddpm.image_size` trains and samples at another side; the samples are resized to data.image_size
  (bicubic, antialiased) and the manifest says so (`sampled_at`, `resized_to`).
- Normalisation from the real training images for every condition of a modality: a scratch
  real+gen MAE saves the same mean and std as the real MAE, those of the real training images.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from data.known_answers import bicubic_resize  # tests/data/known_answers.py
from genaug.config import load_config
from genaug.data.selection import SETS
from genaug.engine import Trainer
from genaug.generators import ddpm
from genaug.study import stages
from genaug.study.outputs import load_synthetic
from genaug.study.plan import make_plan

SIDE, DDPM_SIDE, N_TRAIN, N_SYNTHETIC = 8, 4, 8, 8
CONFIG = load_config(None, [
    f"data.image_size={SIDE}", 'study.modalities=["rgb"]', f"study.n_synthetic={N_SYNTHETIC}", "runtime.device='cpu'",
    f"ddpm.image_size={DDPM_SIDE}", "ddpm.block_out_channels=[8, 16]", "ddpm.attention_levels=[]", "ddpm.steps=2",
    "ddpm.batch_size=4", "ddpm.warmup_steps=0", "ddpm.sample_steps=2", "ddpm.sample_batch_size=4",
    "mae.preset='micro'", "mae.patch_size=4", "mae.steps=2", "mae.batch_size=4", "mae.warmup_steps=0",
])


def run_stage(run, out, inputs, params=None):
    """A stage run as the runner runs it, its manifest written as the store writes it."""
    out.mkdir()
    manifest = {}
    context = stages.Context(cfg=CONFIG, out=out, inputs=inputs, params=params or {}, manifest=manifest,
                             trainer=lambda steps, log: Trainer(CONFIG.runtime, steps, out / log, out.name),
                             advance=lambda done: None, note=lambda text: None)
    run(context)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A split folder of dark real RGB frames (pixel values 0-80) and a DDPM stage trained on its pool."""
    root = tmp_path_factory.mktemp("stages")
    generator = torch.Generator().manual_seed(0)
    sets = {name: torch.randint(0, 81, (N_TRAIN, 3, SIDE, SIDE), dtype=torch.uint8, generator=generator)
            for name in SETS}
    (root / "split").mkdir()
    save_file({f"{name}.rgb": images for name, images in sets.items()}, root / "split" / "frames.safetensors")
    ids = {name: [f"{name}_{i}" for i in range(N_TRAIN)] for name in SETS}
    (root / "split" / "split.json").write_text(json.dumps({"ids": ids, "night": {n: [None] * N_TRAIN for n in SETS}}))
    with pytest.MonkeyPatch.context() as patch:  # FD/KID scores are not what these tests check
        patch.setattr("genaug.analysis.fidelity.fidelity", lambda *args: {})
        ddpm_step = next(step for step in make_plan(CONFIG) if step.stage == "ddpm")
        manifest = run_stage(stages.run_ddpm, root / "ddpm", {"split": root / "split"}, ddpm_step.params)
    return root, sets, manifest


def test_ddpm_samples_at_its_own_side_are_resized_to_the_data_side_and_the_manifest_says_so(built):
    """ddpm.image_size = 4, data.image_size = 8: the pipeline makes 4-pixel images; the stage's images are
    those samples enlarged to 8 pixels by 'bicubic, antialiased' (an independent numpy bicubic here)."""
    root, _, manifest = built
    assert manifest["sampled_at"] == DDPM_SIDE and manifest["resized_to"] == SIDE
    assert manifest["resize"] == "bicubic, antialiased"
    cfg = CONFIG.ddpm
    native = ddpm.sample(root / "ddpm" / "pipeline", N_SYNTHETIC, cfg.sampler, cfg.sample_steps, cfg.sample_batch_size,
                         CONFIG.seed)
    assert native.shape == (N_SYNTHETIC, 3, DDPM_SIDE, DDPM_SIDE)  # the same seed's samples, before resizing
    written = load_synthetic(root / "ddpm")
    assert written.shape == (N_SYNTHETIC, 3, SIDE, SIDE)
    difference = np.abs(written.numpy().astype(int) - bicubic_resize(native.numpy(), SIDE).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_a_real_gen_mae_saves_the_normalisation_of_the_real_training_images(built, tmp_path):
    """Scratch MAEs of `real` and `real+gen:ddpm` both save (preprocessor_config.json) the per-channel mean
    and std of the real training images, computed here in numpy, not of the images they trained on: the
    DDPM's bright samples would move the mean of real+gen by far more than the tolerance."""
    from transformers import ViTImageProcessorPil

    root, sets, _ = built
    real = sets["train"].numpy() / 255
    mean, std = real.mean(axis=(0, 2, 3)), np.maximum(real.std(axis=(0, 2, 3), ddof=1), 1e-3)
    combined = np.concatenate([real, load_synthetic(root / "ddpm").numpy() / 255])
    assert (np.abs(combined.mean(axis=(0, 2, 3)) - mean) > 0.05).all()  # the check has teeth
    saved = {}
    for condition, inputs in (("real", {}), ("real+gen:ddpm", {"generator": root / "ddpm"})):
        out = tmp_path / condition.replace(":", "-")
        manifest = run_stage(stages.run_mae, out, {"split": root / "split", **inputs},
                             {"modality": "rgb", "condition": condition, "seed": 0})
        assert manifest["n_real"] == N_TRAIN and manifest["n_images"] == N_TRAIN + len(inputs) * N_SYNTHETIC
        assert manifest["normalizer"] == f"fit on {N_TRAIN} real training images"
        processor = ViTImageProcessorPil.from_pretrained(out / "model")
        saved[condition] = (processor.image_mean, processor.image_std)
        assert np.allclose(processor.image_mean, mean, atol=1e-6) and np.allclose(processor.image_std, std, atol=1e-6)
    assert saved["real"] == saved["real+gen:ddpm"]
