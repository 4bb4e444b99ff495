"""The training loop's guards: non-finite losses, rollback, Ctrl-C, and resuming after each."""

import json

import pytest
import torch

from genaug import engine
from genaug.config import RuntimeConfig
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


def trainer(tmp_path, steps=12, **runtime):
    settings = dict(device="cpu", log_every=2, checkpoint_every=4) | runtime
    tmp_path.mkdir(parents=True, exist_ok=True)
    return Trainer(RuntimeConfig(**settings), steps, tmp_path / "log.jsonl", "toy run", checkpoint_dir=tmp_path / "ckpt")


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
    original_step = toy.step

    def press_ctrl_c_at_step_6(i):
        if i == 5:
            engine.request_stop()
        return original_step(i)

    try:
        with pytest.raises(Interrupted) as stopped:
            trainer(tmp_path).fit(press_ctrl_c_at_step_6, toy.state())
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
