"""The training loop's guards: non-finite losses, rollback, Ctrl-C, and resuming after each; and its
checkpoints: which ones are kept, which one a resume picks, what it restores, and that a half-written
one is never read."""

import errno
import json
import os

import pytest
import torch

from genaug import engine
from genaug.config import AugmentConfig, RuntimeConfig
from genaug.engine import Trainer
from genaug.errors import Interrupted, UserError


class Toy:
    """A one-parameter model trained towards 3 with SGD and a LambdaLR, whose loss can be poisoned."""

    def __init__(self, poison_steps=()):
        torch.manual_seed(0)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.optimizer = torch.optim.SGD([self.weight], lr=0.1)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.poison = set(poison_steps)
        self.lrs = []

    def state(self):
        return {"optimizer": self.optimizer, "schedule": self.schedule, "model": torch.nn.ParameterDict({"w": self.weight})}

    def step(self, i):
        loss = (self.weight - 3).pow(2).sum() + torch.randn(1).sum() * 0  # draws from the global RNG
        if i in self.poison:
            self.poison.discard(i)  # poisoned once: a rollback that halves the lr gets past it
            loss = loss * float("nan")
        self.optimizer.zero_grad()
        loss.backward()
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        self.schedule.step()
        return {"loss": loss}


class Learner:
    """A linear model with dropout on flipped 4x4 images: every loss depends on all a resume must restore,
    the sampler's data order and flips, torch's global RNG (dropout), AdamW's moments and a decaying
    schedule. Built afresh, as a new process would build it: the global RNG seeded again."""

    def __init__(self, run: Trainer):
        torch.manual_seed(0)
        images = torch.randint(0, 256, (16, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        self.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.25), torch.nn.Linear(16, 1))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.05)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1 / (1 + step))
        self.batches = run.batches(images, 0, AugmentConfig(hflip=True))
        self.target = torch.linspace(-1, 1, 16)

    def state(self):
        return {"model": self.model, "optimizer": self.optimizer, "schedule": self.schedule, "batches": self.batches}

    def step(self, i):
        x = self.batches(4)
        loss = (self.model(x).squeeze(1) - x.flatten(1) @ self.target).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return {"loss": loss}


def trainer(tmp_path, steps=12, on_step=None, **runtime):
    settings = dict(device="cpu", log_every=2, checkpoint_every=4) | runtime
    tmp_path.mkdir(parents=True, exist_ok=True)
    return Trainer(RuntimeConfig(**settings), steps, tmp_path / "log.jsonl", "toy run", on_step=on_step,
                   checkpoint_dir=tmp_path / "ckpt")


def stop_at(step, i_stop):
    """`step`, with Ctrl-C pressed during step `i_stop` (1-based)."""

    def pressing(i):
        if i == i_stop - 1:
            engine.request_stop()
        return step(i)

    return pressing


def test_non_finite_loss_names_the_step_and_the_last_good_checkpoint(tmp_path):
    toy = Toy(poison_steps={6})  # step 7 (0-based 6): after the checkpoint at step 4
    with pytest.raises(UserError) as error:
        trainer(tmp_path).fit(toy.step, toy.state())
    message = str(error.value)
    assert "toy run: loss 'loss' became non-finite at step 7" in message
    assert f"last good checkpoint: {tmp_path / 'ckpt' / 'checkpoint-4'}" in message
    assert "runtime.on_nonfinite" in message and "\n" not in message
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_rollback_goes_back_once_with_half_the_learning_rate(tmp_path):
    toy = Toy(poison_steps={6})
    run = trainer(tmp_path, on_nonfinite="rollback")
    history = run.fit(toy.step, toy.state())
    assert [row["step"] for row in history] == [2, 4, 6, 8, 10, 12]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history)
    assert run.notes == ["toy run: loss 'loss' non-finite at step 7; rolled back to checkpoint-4 with every "
                         "learning rate halved"]
    # steps 1-8 at 0.1 (step 7's NaN shows at the log step, 8), then 5-12 again at 0.05: the schedule's
    # base rate was halved too, so it does not put the old rate back
    assert toy.lrs[:8] == [0.1] * 8 and toy.lrs[8:] == [0.05] * 8
    assert len(run.step_losses["loss"]) == 12
    # a second non-finite loss is not rolled back again
    toy = Toy(poison_steps={6})
    again = trainer(tmp_path / "again", on_nonfinite="rollback")
    original_step = toy.step

    def poisoned_twice(i):
        if i == 9 and again.rolled_back:  # NaN again at step 10, after the rollback
            toy.poison.add(9)
        return original_step(i)

    with pytest.raises(UserError, match="non-finite at step 10"):
        again.fit(poisoned_twice, toy.state())


def test_ctrl_c_checkpoints_the_current_step_and_the_rerun_resumes_exactly(tmp_path):
    uninterrupted = Toy()
    expected = trainer(tmp_path / "whole").fit(uninterrupted.step, uninterrupted.state())

    toy = Toy()
    try:
        with pytest.raises(Interrupted) as stopped:
            trainer(tmp_path).fit(stop_at(toy.step, 6), toy.state())
    finally:
        engine.clear_stop()
    assert "stopped at step 6 of 12" in str(stopped.value) and "run the same genaug command again" in str(stopped.value)
    assert stopped.value.exit_code == 130
    assert (tmp_path / "ckpt" / "checkpoint-6").is_dir()  # saved although not due (every 4)

    resumed_toy = Toy()
    resumed = trainer(tmp_path)
    history = resumed.fit(resumed_toy.step, resumed_toy.state())
    assert resumed.resumed_from == 6 and history == expected
    assert torch.equal(resumed_toy.weight, uninterrupted.weight)


def test_a_resumed_run_repeats_the_uninterrupted_run_bit_for_bit(tmp_path):
    """Stopped at step 10 and resumed by a fresh trainer and model (as a new process would), a run has
    every step's loss, the weights and the learning rate of the run that never stopped, to the bit: the
    checkpoint restored the data order, the global RNG, the optimiser and the schedule. It resumes from
    the newest checkpoint by step number: checkpoint-10, not checkpoint-9 (which sorts after it by name)."""
    settings = dict(steps=14, checkpoint_every=3, checkpoints_total_limit=3)
    whole_run = trainer(tmp_path / "whole", **settings)
    whole = Learner(whole_run)
    expected = whole_run.fit(whole.step, whole.state())

    stopped_run = trainer(tmp_path / "run", **settings)
    stopped = Learner(stopped_run)
    try:
        with pytest.raises(Interrupted, match="stopped at step 10 of 14"):
            stopped_run.fit(stop_at(stopped.step, 10), stopped.state())
    finally:
        engine.clear_stop()
    assert {p.name for p in (tmp_path / "run" / "ckpt").iterdir()} == {"checkpoint-6", "checkpoint-9", "checkpoint-10"}

    resumed_run = trainer(tmp_path / "run", **settings)
    resumed = Learner(resumed_run)
    history = resumed_run.fit(resumed.step, resumed.state())
    assert resumed_run.resumed_from == 10
    assert resumed_run.step_losses == whole_run.step_losses and len(whole_run.step_losses["loss"]) == 14
    assert history == expected
    for mine, theirs in zip(resumed.model.parameters(), whole.model.parameters()):
        assert torch.equal(mine, theirs)
    assert resumed.schedule.get_last_lr() == whole.schedule.get_last_lr() == pytest.approx([0.05 / 15])


def test_checkpoints_total_limit_keeps_the_newest_ones(tmp_path):
    """A checkpoint every 2 steps and at the last (11), at most 2 kept: after each save the folder holds
    exactly the two newest by step number, and nothing else (no temporary folder left behind)."""
    folder = tmp_path / "ckpt"
    held = {}

    def look(i, row):
        held[i] = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    toy = Toy()
    trainer(tmp_path, steps=11, on_step=look, checkpoint_every=2, checkpoints_total_limit=2).fit(toy.step, toy.state())
    names = {i: sorted(f"checkpoint-{s}" for s in steps) for i, steps in
             {1: [], 2: [2], 3: [2], 4: [2, 4], 6: [4, 6], 8: [6, 8], 10: [8, 10], 11: [10, 11]}.items()}
    assert {i: held[i] for i in names} == names


def test_a_checkpoint_cut_short_is_never_resumed_from(tmp_path, monkeypatch):
    """Writing checkpoint-8 fails halfway (a truncated tensors file, then "no space left"; a kill there
    leaves the same): no checkpoint-8 appears, since a checkpoint is written under a temporary name and
    renamed once complete. The next run resumes from checkpoint-4 and ends where an uninterrupted one does."""
    import safetensors.torch

    whole = Toy()
    expected = trainer(tmp_path / "whole").fit(whole.step, whole.state())

    save_file = safetensors.torch.save_file
    saves = []

    def fails_the_second_time(tensors, filename, *args, **kwargs):
        saves.append(filename)
        if len(saves) == 2:
            with open(filename, "wb") as half:
                half.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save_file(tensors, filename, *args, **kwargs)

    toy = Toy()
    with monkeypatch.context() as disk_full:
        disk_full.setattr(safetensors.torch, "save_file", fails_the_second_time)
        with pytest.raises(OSError, match="No space left"):
            trainer(tmp_path / "run").fit(toy.step, toy.state())
    assert len(saves) == 2
    kept = sorted(p.name for p in (tmp_path / "run" / "ckpt").iterdir() if not p.name.startswith("."))
    assert kept == ["checkpoint-4"]  # (the unfinished .tmp-checkpoint-8 is never read, and is replaced next time)

    resumed_toy = Toy()
    resumed = trainer(tmp_path / "run")
    assert resumed.fit(resumed_toy.step, resumed_toy.state()) == expected and resumed.resumed_from == 4
    assert torch.equal(resumed_toy.weight, whole.weight)
