"""The fast path gives the same training as the plain one (on the CPU; speed is measured in bench/)."""

import shutil

import pytest
import torch

from genaug import mae
from genaug.config import AugmentConfig, MAEConfig, RuntimeConfig
from genaug.data.images import BatchSampler
from genaug.engine import Trainer

CFG = MAEConfig(preset="micro", patch_size=4, steps=6, batch_size=4, warmup_steps=1)


def images(n=12, channels=1, side=16, seed=0):
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def train(tmp_path, name, **runtime):
    trainer = Trainer(RuntimeConfig(device="cpu", log_every=2, checkpoint_every=0, **runtime), CFG.steps,
                      tmp_path / f"{name}.jsonl", name)
    data = images()
    model, _ = mae.train(CFG, data, mae.Normalizer.fit(data), seed=0, trainer=trainer)
    return trainer, model


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler (none installed)")
def test_compiled_mae_trains_like_the_eager_one(tmp_path):
    import torch._inductor.config

    eager, eager_model = train(tmp_path, "eager", compile="off")
    # Compiled graphs draw random numbers (ViTMAE's masks) from inductor's own generator unless told
    # to use eager's: with it, both runs see the same masks and only the arithmetic differs.
    with torch._inductor.config.patch(fallback_random=True):
        compiled, compiled_model = train(tmp_path, "compiled", compile="on")
    assert eager.compiled == [] and compiled.compiled == ["mae"]  # it really ran compiled
    assert compiled.timing["compile"] and compiled.timing["first_step_s"] > 0
    # fused kernels reorder float arithmetic: equal to tolerance, not bit-for-bit
    assert torch.allclose(torch.tensor(compiled.step_losses["loss"]), torch.tensor(eager.step_losses["loss"]),
                          rtol=1e-4, atol=1e-5)
    for a, b in zip(compiled_model.parameters(), eager_model.parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)
    assert not torch.equal(torch.tensor(eager.step_losses["loss"][:1]), torch.tensor(eager.step_losses["loss"][-1:]))


def test_resident_and_host_backed_batches_train_identically(tmp_path):
    resident, resident_model = train(tmp_path, "resident", resident_data="on")
    host, host_model = train(tmp_path, "host", resident_data="off")
    assert resident.step_losses == host.step_losses
    assert all(torch.equal(a, b) for a, b in zip(resident_model.parameters(), host_model.parameters()))


@pytest.mark.parametrize("augment", [AugmentConfig(), AugmentConfig(crop_scale=[0.5, 1.0])])
def test_batch_sampler_gives_the_same_batches_wherever_the_set_lives(augment):
    data = images(channels=3)
    batches = {}
    for resident in (True, False):
        torch.manual_seed(0)  # the crop draws from torch's global RNG
        sampler = BatchSampler(data, torch.device("cpu"), seed=5, augment=augment, resident=resident)
        batches[resident] = [sampler(4) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(batches[True], batches[False]))
    assert not torch.equal(batches[True][0], batches[True][1])


def test_compile_decision(monkeypatch, tmp_path):
    def decision(steps, cuda, **runtime):
        monkeypatch.setattr(Trainer, "cuda", property(lambda self: cuda))
        return Trainer(RuntimeConfig(device="cpu", **runtime), steps, tmp_path / "log.jsonl", "x").compile_decision()

    assert decision(10_000, cuda=False) == (False, "auto: not on CUDA (compiling does not repay itself on the CPU)")
    wanted, why = decision(100, cuda=True)
    assert not wanted and "100 steps < runtime.compile_min_steps = 500" in why
    assert decision(500, cuda=True)[0] and decision(100, cuda=True, compile_min_steps=50)[0]
    assert decision(10, cuda=False, compile="on")[0] and not decision(10_000, cuda=True, compile="off")[0]


def test_normalizer_copies_its_statistics_to_a_device_once():
    normalizer = mae.Normalizer([0.5], [0.25])
    unit = torch.rand(2, 1, 4, 4)
    first = normalizer._on(unit.device)
    normalizer.to_model(unit)
    normalizer.to_unit(unit)
    assert normalizer._on(unit.device)[0] is first[0] and len(normalizer._copies) == 1
    assert torch.allclose(normalizer.to_model(unit), (unit - 0.5) / 0.25)


def test_precision_decision(monkeypatch):
    from genaug import engine

    def decided(stage, device="cpu", bf16_cpu=True, **runtime):
        monkeypatch.setattr(engine, "cpu_computes_bf16", lambda: bf16_cpu)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: device == "cuda")
        return engine.precision(RuntimeConfig(device=device, **runtime), stage)[0]

    assert decided("mae", "cuda") == decided("cyclegan", "cuda") == "bf16"
    assert decided("ddpm") == "bf16" and decided("ddpm", bf16_cpu=False) == "fp32"  # emulated bf16 is slower
    assert decided("mae") == decided("cyclegan") == decided("pix2pix") == "fp32"
    assert decided("mae", precision="bf16") == "bf16" and decided("ddpm", "cuda", precision="fp32") == "fp32"


def test_training_precisions_differ_per_stage_in_one_process(tmp_path):
    """accelerate fixes one mixed-precision setting per process; genaug's own autocast lets a bf16 DDPM and
    an fp32 MAE train one after the other, as a study does."""
    from genaug.config import DDPMConfig
    from genaug.generators import ddpm

    micro = DDPMConfig(block_out_channels=[8, 16], attention_levels=[-1], steps=6, batch_size=4, warmup_steps=1,
                       lr=1e-3)

    histories = {}
    for name in ("bf16", "fp32"):
        torch.manual_seed(0)
        trainer = Trainer(RuntimeConfig(device="cpu", log_every=1, precision=name), micro.steps,
                          tmp_path / f"ddpm-{name}.jsonl", "ddpm")
        with trainer.autocast():
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if name == "bf16" else torch.float32)
        *_, histories[name] = ddpm.train(micro, images(channels=3, side=8), seed=0, trainer=trainer)
        assert trainer.timing["precision"] == name
    bf16, fp32 = ([row["loss"] for row in histories[k]] for k in ("bf16", "fp32"))
    assert bf16 != fp32  # bf16 really ran ...
    assert torch.allclose(torch.tensor(bf16), torch.tensor(fp32), rtol=0.05)  # ... and trains the same model
    mae_trainer, _ = train(tmp_path, "mae-after-bf16")
    assert mae_trainer.timing["precision"] == "fp32"


def test_a_stage_trained_in_one_precision_is_never_taken_for_the_other():
    from genaug.config import load_config
    from genaug.study.plan import make_plan

    def keys(value):
        plan = make_plan(load_config(None, ["runtime.device='cpu'", f"runtime.precision='{value}'"]))
        return {step.stage: step.key for step in plan}

    assert keys("bf16")["ddpm"] != keys("fp32")["ddpm"] and keys("bf16")["mae"] != keys("fp32")["mae"]


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler (none installed)")
def test_back_to_back_compiled_maes_compile_once(tmp_path):
    """A study trains its MAEs one after another in one process: only the first pays for compiling
    (the graph takes the weights as inputs, so a new model of the same shape reuses it)."""
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    with torch._inductor.config.patch(fallback_random=True):  # eager's masks, as in the test above
        first, _ = train(tmp_path, "first", compile="on")
        graphs = counters["stats"]["unique_graphs"]
        assert graphs >= 1
        second, _ = train(tmp_path, "second", compile="on")
    eager, _ = train(tmp_path, "eager", compile="off")
    assert counters["stats"]["unique_graphs"] == graphs  # nothing recompiled
    assert first.compiled == second.compiled == ["mae"]
    assert torch.allclose(torch.tensor(second.step_losses["loss"]), torch.tensor(eager.step_losses["loss"]),
                          rtol=1e-4, atol=1e-5)  # the reused graph trains the second model, not the first


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler (none installed)")
def test_cuda_graph_mode_marks_every_step(tmp_path, monkeypatch):
    """runtime.compile_mode = "reduce-overhead" (CUDA graphs, for host-bound small batches). On the CPU
    inductor runs without graphs, so this checks the trainer's side: a new-iteration mark before every
    step, so that a replay may overwrite the last one's outputs."""
    import torch._inductor.config

    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    eager, _ = train(tmp_path, "eager", compile="off")
    with torch._inductor.config.patch(fallback_random=True):
        graphed, _ = train(tmp_path, "graphed", compile="on", compile_mode="reduce-overhead")
    assert graphed.graphed and not eager.graphed and graphed.timing["compile_mode"] == "reduce-overhead"
    assert len(marks) == CFG.steps  # one per step, none for the eager run
    assert torch.allclose(torch.tensor(graphed.step_losses["loss"]), torch.tensor(eager.step_losses["loss"]),
                          rtol=1e-4, atol=1e-5)


def test_the_trainer_keeps_copies_of_the_losses_a_step_returns(tmp_path):
    """A CUDA graph's replay writes its outputs in place: the losses of earlier steps must not change."""
    output = torch.zeros(())

    def step(i):
        output.fill_(float(i))  # what a replay does to the tensor the last step returned
        return {"loss": output}

    trainer = Trainer(RuntimeConfig(device="cpu", log_every=2, checkpoint_every=0), 4, tmp_path / "log.jsonl", "x")
    rows = trainer.fit(step)
    assert trainer.step_losses["loss"] == [0.0, 1.0, 2.0, 3.0]
    assert [row["loss"] for row in rows] == [0.5, 2.5]
