import json

import pytest
import torch

from genaug.config import DDPMConfig, RuntimeConfig, load_config
from genaug.data.images import from_unit
from genaug.engine import Trainer
from genaug.generators import ddpm

MICRO = DDPMConfig(block_out_channels=[8, 16], attention_levels=[], steps=6, batch_size=4, warmup_steps=1,
                   lr=1e-3, sample_steps=3)


def images(n=8, side=8, seed=0):
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def train(tmp_path, cfg=MICRO, checkpoint_every=0, checkpoint_dir=None, on_step=None, log="log.jsonl"):
    runtime = RuntimeConfig(device="cpu", log_every=2, checkpoint_every=checkpoint_every)
    trainer = Trainer(runtime, cfg.total_steps(8), tmp_path / log, "ddpm", on_step, checkpoint_dir)
    return ddpm.train(cfg, images(), seed=0, trainer=trainer)


def state(unet):
    return {k: v.clone() for k, v in unet.state_dict().items()}


def test_paper_preset_is_the_seeds_unet_and_recipe():
    cfg = load_config(None, ['ddpm.preset="paper"', "data.image_size=128"]).ddpm
    unet = ddpm.build_unet(cfg, 128, 3)
    assert unet.config.down_block_types == ("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D")
    assert unet.config.up_block_types == ("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4
    assert unet.config.block_out_channels == (128, 128, 256, 256, 512, 512) and unet.config.layers_per_block == 2
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 113.7  # the anchors' 113.7 M
    assert (cfg.lr, cfg.warmup_steps, cfg.batch_size, cfg.grad_clip, cfg.image_size) == (1e-4, 500, 16, 1.0, 128)
    assert cfg.total_steps(200) == 625  # 50 epochs of 200 images at batch 16


def test_preset_fills_only_keys_left_out():
    cfg = load_config(None, ['ddpm.preset="paper"', "ddpm.lr=3e-4", "ddpm.epochs=0", "ddpm.steps=7"]).ddpm
    assert cfg.lr == 3e-4 and cfg.total_steps(200) == 7 and cfg.layers_per_block == 2


def watch_unet(monkeypatch):
    """Record what ddpm.train's UNet is: its initial weights, and the shape of every input it receives."""
    seen = {"init": None, "unet": None, "inputs": []}
    original = ddpm.build_unet

    def build_and_watch(*args):
        unet = original(*args)
        seen["unet"], seen["init"] = unet, [p.detach().clone() for p in unet.parameters()]
        unet.register_forward_pre_hook(lambda module, args: seen["inputs"].append(tuple(args[0].shape)))
        return unet

    monkeypatch.setattr(ddpm, "build_unet", build_and_watch)
    return seen


def test_ema_is_the_warmed_up_average_of_the_raw_trajectory_and_the_pipeline_samples_with_it(tmp_path, monkeypatch):
    """The EMA the pipeline samples with is the average the config describes, computed here from the raw
    weights after every optimiser step: e_k = d_k e_(k-1) + (1 - d_k) w_k with d_k = min(1 - k^-power,
    ema_max_decay) (diffusers' warm-up, inv_gamma 1; d_1 = 0). An EMA never updated stays at the
    initial weights; one updated with another decay lands elsewhere."""
    seen = watch_unet(monkeypatch)
    trajectory = []
    raw, ema, scheduler, history = train(
        tmp_path, on_step=lambda i, row: trajectory.append([p.detach().clone() for p in seen["unet"].parameters()]))
    assert [r["step"] for r in history] == [2, 4, 6] and len(trajectory) == MICRO.steps
    expected = [p.double() for p in seen["init"]]
    for k, weights in enumerate(trajectory, start=1):
        decay = min(1 - k ** -MICRO.ema_power, MICRO.ema_max_decay)
        expected = [decay * e + (1 - decay) * w.double() for e, w in zip(expected, weights)]
    ema_params = list(ema.parameters())
    assert all(torch.allclose(e.double(), x, rtol=1e-5, atol=1e-6) for e, x in zip(ema_params, expected))
    # the check has teeth: the average is neither the initial nor the last raw weights
    assert sum(not torch.allclose(e, i, atol=1e-4) for e, i in zip(ema_params, seen["init"])) > len(ema_params) // 2
    differs = [not torch.equal(a, b) for a, b in zip(raw.parameters(), ema.parameters())]
    assert all(differs)
    ddpm.save(tmp_path / "model", raw, scheduler, ema)
    from diffusers import DDPMPipeline, UNet2DModel

    loaded = DDPMPipeline.from_pretrained(tmp_path / "model" / "pipeline").unet
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), ema.parameters()))
    kept = UNet2DModel.from_pretrained(tmp_path / "model" / "unet_raw")
    assert all(torch.equal(a, b) for a, b in zip(kept.parameters(), raw.parameters()))


def test_saved_pipeline_reproduces_samples_for_the_same_seed(tmp_path):
    raw, ema, scheduler, _ = train(tmp_path)
    ddpm.save(tmp_path / "model", raw, scheduler, ema)
    folder = tmp_path / "model" / "pipeline"
    first = ddpm.sample(folder, 5, "dpmsolver++", 3, batch_size=2, seed=3)
    assert first.dtype == torch.uint8 and first.shape == (5, 3, 8, 8)
    assert torch.equal(first, ddpm.sample(folder, 5, "dpmsolver++", 3, batch_size=2, seed=3))
    assert not torch.equal(first, ddpm.sample(folder, 5, "dpmsolver++", 3, batch_size=2, seed=4))
    assert not torch.equal(first, ddpm.sample(folder, 5, "ddim", 3, batch_size=2, seed=3))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_own_sampling_loop_gives_the_stock_pipelines_images(tmp_path, sampler):
    """genaug samples with its own loop (bf16 weights, fp32 solver on CUDA); on the CPU it must be
    DDPMPipeline's loop exactly: the same images for the same generator."""
    import diffusers

    raw, ema, scheduler, _ = train(tmp_path)
    ddpm.save(tmp_path / "model", raw, scheduler, ema)
    folder = tmp_path / "model" / "pipeline"
    ours = ddpm.sample(folder, 3, sampler, 4, batch_size=3, seed=2)
    pipeline = diffusers.DDPMPipeline.from_pretrained(folder)
    cls_name, extra = ddpm.SAMPLERS[sampler]
    pipeline.scheduler = getattr(diffusers, cls_name).from_config(pipeline.scheduler.config, **extra)
    pipeline.set_progress_bar_config(disable=True)
    stock = pipeline(batch_size=3, generator=torch.Generator().manual_seed(2 * 100_003), num_inference_steps=4,
                     output_type="pt").images
    assert torch.equal(ours, from_unit(stock))


def test_ctrl_c_while_sampling_stops_at_the_next_solver_step(tmp_path, monkeypatch):
    from genaug.errors import Interrupted

    raw, ema, scheduler, _ = train(tmp_path)
    ddpm.save(tmp_path / "model", raw, scheduler, ema)
    asked = iter([False, False, True])  # Ctrl-C arrives while the second solver step runs
    monkeypatch.setattr(ddpm, "stop_requested", lambda: next(asked))
    with pytest.raises(Interrupted, match=r"^interrupted while sampling, at solver step 2 of 3; run the same genaug "
                                          r"command again to resume: .* without retraining$") as stopped:
        ddpm.sample(tmp_path / "model" / "pipeline", 4, "dpmsolver++", 3, batch_size=4, seed=0)
    assert stopped.value.exit_code == 130
    with pytest.raises(StopIteration):  # it asked once per step, and not again after stopping
        next(asked)


def test_trains_at_its_own_resolution(tmp_path, monkeypatch):
    """ddpm.image_size = 4 on 8-pixel frames: the UNet is built for 4 pixels and every batch it trains on
    is 4 pixels (frames resized first), not the 8-pixel frames a UNet of any sample_size would accept."""
    seen = watch_unet(monkeypatch)
    cfg = MICRO.model_copy(update={"image_size": 4, "steps": 1})
    raw, _, _, _ = train(tmp_path, cfg)
    assert raw.config.sample_size == 4
    assert seen["inputs"] == [(4, 3, 4, 4)]  # one step: batch 4, RGB, 4 x 4


class Stop(Exception):
    pass


def test_resume_from_checkpoint_equals_uninterrupted_training(tmp_path):
    whole_raw, whole_ema, _, whole_history = train(tmp_path, checkpoint_every=3, checkpoint_dir=tmp_path / "a",
                                                   log="a.jsonl")

    def stop_halfway(i, row):
        if i == 3:
            raise Stop

    with pytest.raises(Stop):
        train(tmp_path, checkpoint_every=3, checkpoint_dir=tmp_path / "b", on_step=stop_halfway, log="b.jsonl")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["checkpoint-3"]
    raw, ema, _, history = train(tmp_path, checkpoint_every=3, checkpoint_dir=tmp_path / "b", log="b.jsonl")
    for whole, resumed in ((whole_raw, raw), (whole_ema, ema)):
        assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert history == whole_history
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_checkpoints_keep_the_total_limit_and_hold_no_pickle(tmp_path):
    train(tmp_path, checkpoint_every=1, checkpoint_dir=tmp_path / "c")
    kept = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert kept == ["checkpoint-5", "checkpoint-6"]  # runtime.checkpoints_total_limit = 2
    files = sorted(p.name for p in (tmp_path / "c" / "checkpoint-6").iterdir())
    assert files == ["state.json", "tensors.safetensors"]
    saved = json.loads((tmp_path / "c" / "checkpoint-6" / "state.json").read_text())
    assert {"unet", "optimizer", "schedule", "ema", "batches", "noise", "global_rng"} == set(saved["state"])


def test_a_broken_checkpoint_is_named_not_trusted(tmp_path):
    from genaug.errors import UserError

    train(tmp_path, checkpoint_every=6, checkpoint_dir=tmp_path / "c")
    (tmp_path / "c" / "checkpoint-6" / "tensors.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="checkpoint-6: unreadable checkpoint"):
        train(tmp_path, checkpoint_every=6, checkpoint_dir=tmp_path / "c")


@pytest.mark.parametrize("sampler", ["ddpm", "dpmsolver++"])
def test_fixed_batch_sampling_gives_the_eager_samplers_images(tmp_path, monkeypatch, sampler):
    """The compiled sampler's batching, on the CPU: torch.compile faked as the identity, so only the
    fixed-shape logic runs. 5 images at batch 2: the last batch (1 image) is padded to 2 and its padding
    dropped; the UNet only ever sees batches of 2, a new CUDA-graph step is marked before every call, and
    the images are the eager sampler's (the solver's random draws, DDPM's per-step noise included, see
    only the real images). Tolerance one uint8 level: a batch of 2 may round differently from 1."""
    raw, ema, scheduler, _ = train(tmp_path)
    ddpm.save(tmp_path / "model", raw, scheduler, ema)
    folder = tmp_path / "model" / "pipeline"
    eager = ddpm.sample(folder, 5, sampler, 3, batch_size=2, seed=3)

    compiled, shapes, marks = [], [], []

    def fake_compile(module, **options):
        compiled.append(options)

        def forward(image, t):
            shapes.append(tuple(image.shape))
            return module(image, t)

        return forward

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    fixed = ddpm.sample(folder, 5, sampler, 3, batch_size=2, seed=3, compile_unet="on")
    assert compiled == [{"mode": "reduce-overhead", "dynamic": False}]
    assert set(shapes) == {(2, 3, 8, 8)} and len(shapes) == len(marks) == 3 * 3  # 3 batches x 3 solver steps
    assert fixed.shape == eager.shape == (5, 3, 8, 8)
    assert (fixed.int() - eager.int()).abs().max() <= 1
    assert not torch.equal(fixed[4], fixed[3])  # the padded batch's real image is its own, not padding


def test_sampling_compiles_only_long_samplers_on_cuda():
    decide = ddpm.sampling_compile_decision
    assert decide("cpu", 1000) == (False, "auto: not on CUDA")
    assert decide("cuda", 20) == (False, f"auto: 20 solver steps < {ddpm.SAMPLE_COMPILE_MIN_STEPS}")
    assert decide("cuda:0", 1000) == (True, f"auto: CUDA and 1000 solver steps >= {ddpm.SAMPLE_COMPILE_MIN_STEPS}")
    assert decide("cuda", ddpm.SAMPLE_COMPILE_MIN_STEPS)[0] and not decide("cuda", ddpm.SAMPLE_COMPILE_MIN_STEPS - 1)[0]
    assert decide("cpu", 3, "on")[0] and not decide("cuda", 1000, "off")[0]
