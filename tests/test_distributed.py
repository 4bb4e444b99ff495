"""Data-parallel training: N processes (`torchrun`, gloo on the CPU) train what one process trains.

Real child processes: `python -m torch.distributed.run --standalone --nproc_per_node 2 ...`.

- A toy model through `Trainer` (the global batch split by `BatchSampler`, DDP, a schedule, a
  checkpoint) ends with the weights and logged losses of one process with the same global batch, to
  float rounding; killed mid-run, two processes resume from the main one's checkpoint to the same end.
- A micro study restricted to the MAE stage gives the one-process results to a tolerance (ViTMAE
  draws each process's masks from its own copy of the global RNG, so the masks, not the data, differ),
  evaluates each test image exactly once in the original order, and writes every artifact once.
- A NaN in one process's loss rolls every process back together, or (the default) stops every process
  at the same step with the same error; a non-main process builds in private scratch and leaves the
  lock alone; an indivisible global batch is refused naming its key.
"""

import json
import os
import runpy
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

needs_gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch build has no torch.distributed with the gloo backend: multi-process training cannot run",
)

TIMEOUT = 150  # a hang (processes waiting on each other) fails instead of blocking the suite


def launch(args, env_extra=None, processes=2):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GENAUG_KILL_AT"):
        env.pop(name, None)
    env.update(env_extra or {})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    return run(command, env)


def run(command, env):
    """`command` to its end; after TIMEOUT its whole process group (the launcher and every worker) is killed."""
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
        pytest.fail(f"{' '.join(command[:6])} ... still running after {TIMEOUT} s (processes waiting on each "
                    f"other?):\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


# ------------------------------------------------------------------------------------ the Trainer itself

TOY = textwrap.dedent('''
    """A linear model on flipped 4x4 images: no randomness but the sampler's, so any number of
    processes must end where one does."""
    import json
    import os
    import sys
    from pathlib import Path

    import torch

    from genaug import distributed
    from genaug.config import AugmentConfig, RuntimeConfig
    from genaug.engine import Trainer
    from genaug.errors import UserError


    def main(out, on_nonfinite=None):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        images = torch.randint(0, 256, (24, 1, 4, 4), dtype=torch.uint8)
        model = torch.nn.Linear(16, 1)
        target = torch.linspace(-1, 1, 16)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))  # steps once a step
        poison = os.environ.get("TOY_POISON")  # "<rank>:<step>": that process's loss is NaN once, there
        runtime = RuntimeConfig(device="cpu", log_every=2, checkpoint_every=3, threads=1,
                                on_nonfinite=on_nonfinite or ("rollback" if poison else "stop"))
        trainer = Trainer(runtime, 9, out / "log.jsonl", "toy run", checkpoint_dir=out / "ckpt")
        model, optimizer, schedule = trainer.prepare(model, optimizer, schedule)
        batches = trainer.batches(images, 0, AugmentConfig(hflip=True))
        ran = []  # the steps this process ran

        def step(i):
            nonlocal poison
            ran.append(i + 1)
            x = batches(8).flatten(1)
            loss = (model(x).squeeze(1) - x @ target).pow(2).mean()
            if poison == f"{distributed.rank()}:{i + 1}":
                loss, poison = loss * float("nan"), None
            trainer.backward(loss)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            return {"loss": loss}

        try:
            trainer.fit(step, {"model": model, "optimizer": optimizer, "schedule": schedule, "batches": batches})
        except UserError as e:  # what `genaug run` would print and exit with, recorded by every process
            (out / f"stopped-rank{distributed.rank()}.json").write_text(json.dumps(
                {"error": str(e), "exit_code": e.exit_code, "last_step": ran[-1]}))
            return
        if distributed.is_main():
            weights = [p.detach().flatten().tolist() for p in trainer.accelerator.unwrap_model(model).parameters()]
            (out / "result.json").write_text(json.dumps({"weights": weights, "step_losses": trainer.step_losses,
                                                          "timing": trainer.timing, "lr": schedule.get_last_lr(),
                                                          "notes": trainer.notes}))


    if __name__ == "__main__":
        for arg in sys.argv[1:]:  # OUT, or stop:OUT / rollback:OUT: trainings one after the other
            mode, _, out = arg.partition(":") if arg.startswith(("stop:", "rollback:")) else ("", "", arg)
            main(out, mode or None)
        distributed.shutdown()
''')


def read_toy(out):
    result = json.loads((out / "result.json").read_text())
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return result, rows


def assert_same_training(a, b, tol):
    (result_a, rows_a), (result_b, rows_b) = a, b
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [2, 4, 6, 8, 9]  # each step once
    for weights_a, weights_b in zip(result_a["weights"], result_b["weights"]):
        assert torch.allclose(torch.tensor(weights_a), torch.tensor(weights_b), rtol=0, atol=tol)
    assert torch.allclose(torch.tensor([r["loss"] for r in rows_a]), torch.tensor([r["loss"] for r in rows_b]),
                          rtol=tol, atol=tol)
    assert torch.allclose(torch.tensor(result_a["step_losses"]["loss"]), torch.tensor(result_b["step_losses"]["loss"]),
                          rtol=tol, atol=tol)
    assert result_a["lr"] == pytest.approx(result_b["lr"])


@needs_gloo
def test_two_processes_train_what_one_trains_and_resume_from_the_main_checkpoint(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    runpy.run_path(str(script))["main"](tmp_path / "one")  # one process: this one
    one = read_toy(tmp_path / "one")
    assert one[0]["timing"].items() >= {"processes": 1, "global_batch": 8, "per_process_batch": 8}.items()

    done = launch([str(script), str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    two = read_toy(tmp_path / "two")
    assert two[0]["timing"].items() >= {"processes": 2, "global_batch": 8, "per_process_batch": 4}.items()
    # the same global batches, gradients averaged over the processes, the schedule stepped once a step;
    # the log (one file, both processes were given it) has each step once: only the main process writes it
    assert_same_training(one, two, 1e-5)

    # Killed at each process's 5th step (after the checkpoint at 3), then run again: both resume from it.
    killed = launch([str(script), str(tmp_path / "resumed")], {"GENAUG_KILL_AT": "step:5"})
    assert killed.returncode != 0
    assert [p.name for p in (tmp_path / "resumed" / "ckpt").iterdir()] == ["checkpoint-3"]
    done = launch([str(script), str(tmp_path / "resumed")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(two, read_toy(tmp_path / "resumed"), 1e-7)


@pytest.fixture(scope="module")
def non_finite(tmp_path_factory):
    """One launch of two processes, two trainings in turn, where only process 1's loss is NaN, once, at
    step 5 (the gradients it shares poison both replicas): `rollback/` under runtime.on_nonfinite =
    "rollback", then `stop/` under the default "stop". -> the folder holding both."""
    root = tmp_path_factory.mktemp("non-finite")
    script = root / "toy.py"
    script.write_text(TOY)
    done = launch([str(script), f"rollback:{root / 'rollback'}", f"stop:{root / 'stop'}"], {"TOY_POISON": "1:5"})
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@needs_gloo
def test_a_non_finite_loss_in_one_process_rolls_every_process_back_together(non_finite):
    # The shared losses show process 1's NaN to both at step 6; both go back to checkpoint-3 and finish in step.
    result, rows = read_toy(non_finite / "rollback")
    assert result["notes"] == ["toy run: loss 'loss' non-finite at step 5; rolled back to checkpoint-3 with every "
                               "learning rate halved"]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 9] and all(torch.isfinite(torch.tensor(result["weights"][0])))
    assert result["lr"] == pytest.approx([0.05 * 0.5 / (1 + 9)])  # halved for good, not for one step


@needs_gloo
def test_a_non_finite_loss_in_one_process_stops_every_process_at_the_same_step(non_finite):
    """runtime.on_nonfinite = "stop" (the default): both processes stop at step 6, where the shared losses
    show process 1's NaN of step 5, each with the same one-line error (exit status 2) naming step 5 and
    the last good checkpoint; nothing is half-written: checkpoint-6, due at that step, is not written,
    the log ends at step 4, and no result."""
    out = non_finite / "stop"
    stopped = [json.loads((out / f"stopped-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert stopped[0] == stopped[1], stopped
    error = stopped[0]["error"]
    assert "toy run: loss 'loss' became non-finite at step 5" in error and "\n" not in error
    assert f"last good checkpoint: {out / 'ckpt' / 'checkpoint-3'}" in error
    assert stopped[0]["exit_code"] == 2 and stopped[0]["last_step"] == 6
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["checkpoint-3"]
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [2, 4]
    assert not (out / "result.json").exists()


def test_an_indivisible_global_batch_is_refused_naming_the_key(tmp_path):
    from genaug.config import AugmentConfig
    from genaug.data.images import BatchSampler
    from genaug.errors import UserError

    sampler = BatchSampler(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), "cpu", 0, AugmentConfig(), rank=1, world=3,
                           batch_key="mae.batch_size")
    with pytest.raises(UserError, match=r"^mae.batch_size = 8 is the global batch .* 3 processes; set it to a multiple of 3$"):
        sampler(8)
    assert sampler(6).shape == (2, 1, 2, 2)


def test_each_process_keeps_its_slice_of_the_global_batch():
    from genaug.config import AugmentConfig
    from genaug.data.images import BatchSampler

    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 1, 2).contiguous()
    whole = BatchSampler(images, "cpu", 3, AugmentConfig())
    parts = [BatchSampler(images, "cpu", 3, AugmentConfig(), rank=r, world=3) for r in range(3)]
    for _ in range(4):
        assert torch.equal(torch.cat([part(6) for part in parts]), whole(6))


def test_a_non_main_process_builds_in_private_scratch_and_leaves_the_lock_alone(tmp_path, monkeypatch):
    from genaug import distributed
    from genaug.study.store import Store

    store = Store(tmp_path)
    checkpoints = store.checkpoints("mae", "m", "k")
    checkpoints.mkdir(parents=True)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "all_gather_object", lambda obj: [obj, obj])  # both at the same stage
    with store.locked() as note:
        assert note is None and not (tmp_path / ".lock").exists()
        with store.building("mae", "m", "k", {}) as (folder, manifest):
            assert folder.is_relative_to(tmp_path / ".scratch-rank1")
            (folder / "log.jsonl").write_text("{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mae"]  # no scratch, no lock
    assert sorted(p.name for p in (tmp_path / "mae").iterdir()) == [checkpoints.name]  # no output; checkpoints kept


# ------------------------------------------------------------------------------------------ a study

MAE_ONLY = [
    'study.modalities=["thermal"]', 'study.conditions=["real"]', "study.seeds=[0]",
    "mae.preset=micro", "mae.steps=40", "mae.warmup_steps=4", "mae.batch_size=16",
    "data.image_size=16", "data.n_pool=8", "data.n_train=32", "data.n_test=12", "data.scenes.n_frames=60",
    "runtime.threads=1", "runtime.log_every=5", "runtime.checkpoint_every=10",
]


def study_args(out):
    args = ["-m", "genaug", "run", "--out", str(out)]
    for item in MAE_ONLY:
        args += ["--set", item]
    return args


def results(out):
    rows = (out / "results.csv").read_text().splitlines()[1:]
    values = {}
    for row in rows:
        modality, condition, seed, split, metric, value = row.split(",")
        key = (condition, seed, split, metric)
        assert key not in values, f"{key} twice in results.csv"
        values[key] = float(value)
    return values


@needs_gloo
def test_a_two_process_study_matches_one_process_and_writes_everything_once(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GENAUG_KILL_AT"):
        env.pop(name, None)
    single = run([sys.executable, *study_args(tmp_path / "one")], env)
    assert single.returncode == 0, single.stderr[-3000:]
    done = launch(study_args(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"

    # The same numbers: the mean predictor exactly (evaluation sharded and gathered back), the MAE to a
    # tolerance (same global batches and schedule; only ViTMAE's random masks differ between the runs).
    a, b = results(one), results(two)
    assert a.keys() == b.keys() and ("real", "0", "test", "masked_mse") in a
    for key in a:  # a probe's accuracy on 4 test images moves in steps of 25 %: only its presence is compared
        if not key[3].startswith("probe_"):
            assert b[key] == pytest.approx(a[key], rel=0.05), key

    # Every stage folder once, complete, each with one manifest; nothing private or half-done left.
    def stage_folders(run):
        return sorted(p.relative_to(run).as_posix() for p in run.glob("*/*") if p.is_dir() and p.parent.name in
                      ("split", "mae", "eval"))

    assert stage_folders(two) == stage_folders(one) and len(stage_folders(two)) == 4
    for folder in stage_folders(two):
        assert (two / folder / "manifest.json").is_file()
    assert not list(two.glob(".scratch*")) and not list(two.glob("*/.tmp-*")) and not list(two.glob("*/.checkpoints-*"))
    assert not (two / ".lock").exists()

    # The log: each logged step once; the manifest: the batch rule.
    (mae,) = [p for p in two.glob("mae/*") if p.is_dir()]
    steps = [json.loads(line)["step"] for line in (mae / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 41, 5))
    timing = json.loads((mae / "manifest.json").read_text())["timing"]["log.jsonl"]
    assert timing.items() >= {"processes": 2, "global_batch": 16, "per_process_batch": 8}.items()

    # Evaluation: every test image exactly once, in the original order; the mean predictor to the digit.
    for folder in [p for p in two.glob("eval/*") if p.is_dir()]:
        ids = [line.split(",")[0] for line in (folder / "per_image.csv").read_text().splitlines()[1:]]
        reference = (one / "eval" / folder.name / "per_image.csv").read_text()
        assert ids == [line.split(",")[0] for line in reference.splitlines()[1:]] and len(ids) == 12
        if "mean-predictor" in folder.name:
            assert (folder / "per_image.csv").read_text() == reference
