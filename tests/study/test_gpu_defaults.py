"""The GPU defaults, on the CPU with faked CUDA facts: which launcher and how many jobs a plain `genaug run`
picks (0, 1, 2 GPUs; one process or several), the GPU each local job sees, the run's shared compile
cache, auto's compile mode per stage and the trainer's CUDA-graph bookkeeping under it. Nothing here
runs on a GPU; the GPU figures are measured by `bench/gpu.sh`."""

import collections
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from genaug.cli import app
from genaug.config import RuntimeConfig, load_config
from genaug.engine import CUDAGRAPH_MAX_BATCH, Trainer
from genaug.errors import UserError
from genaug.study import launch

ONE_AT_A_TIME = "--launcher inprocess to run one step at a time"


@pytest.fixture
def gpus(monkeypatch):
    """fake(n, world=1): torch sees n CUDA devices (0: none) and `world` processes run the study."""

    def fake(n: int, world: int = 1, listed: str | None = None):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        if listed is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
        monkeypatch.setenv("WORLD_SIZE", str(world))

    return fake


def choice(*overrides, launcher="auto", max_parallel=None):
    c = launch.choose_launcher(load_config(None, list(overrides)), launcher, max_parallel)
    return c.launcher, c.max_parallel, c.gpus


def test_plain_run_fills_the_gpus_and_stays_in_process_on_the_cpu(gpus):
    gpus(0)
    cpu = launch.choose_launcher(load_config(None, []))
    assert (cpu.launcher, cpu.max_parallel, cpu.gpus) == ("inprocess", 1, [])
    assert cpu.why.startswith("steps one at a time in this process: not on CUDA")
    gpus(1)
    one = launch.choose_launcher(load_config(None, []))
    assert (one.launcher, one.max_parallel, one.gpus) == ("local", 4, ["0"])
    assert one.why == f"4 jobs at once on 1 GPU: runtime.processes_per_gpu = 4; {ONE_AT_A_TIME}"
    gpus(2)
    assert choice() == ("local", 8, ["0", "1"])
    assert choice("runtime.processes_per_gpu=2") == ("local", 4, ["0", "1"])
    assert choice('runtime.device="cpu"') == ("inprocess", 1, [])  # CUDA there, but the config says CPU
    gpus(2, listed="3,5")  # the jobs see the devices this process sees, by the names it sees them by
    assert choice() == ("local", 8, ["3", "5"])
    gpus(1, listed="GPU-8f2a,GPU-77c1")  # one of the two listed is usable: torch sees 1
    assert choice() == ("local", 4, ["GPU-8f2a"])


def test_several_processes_train_each_step_together_in_process(gpus):
    gpus(2, world=2)  # accelerate launch / torchrun: every process runs the study; no jobs on top
    chosen = launch.choose_launcher(load_config(None, []))
    assert (chosen.launcher, chosen.max_parallel) == ("inprocess", 1) and "2 processes" in chosen.why
    assert choice(max_parallel=4) == ("inprocess", 1, [])


def test_explicit_launcher_and_max_parallel_win(gpus):
    gpus(1)
    assert choice(launcher="inprocess") == ("inprocess", 1, [])
    assert choice(max_parallel=1) == ("inprocess", 1, [])
    assert choice(max_parallel=3) == ("local", 3, ["0"])
    assert choice(launcher="local") == ("local", 4, ["0"])
    assert choice(launcher="local", max_parallel=2) == ("local", 2, ["0"])
    gpus(0)
    assert choice(launcher="local") == ("local", 1, [])  # as before on the CPU
    assert choice(max_parallel=2) == ("local", 2, [])  # asking for 2 at once means jobs, CPU or not
    assert choice(launcher="local", max_parallel=2) == ("local", 2, [])


def test_each_job_gets_the_gpu_with_fewest_running_jobs():
    chosen = launch.LauncherChoice("local", 8, ["0", "1"], "")
    assert chosen.gpu_for([]) == "0" and chosen.gpu_for(["0"]) == "1" and chosen.gpu_for(["0", "1"]) == "0"
    assert chosen.gpu_for(["0", "0", "1"]) == "1" and chosen.gpu_for(["1", "1", "0"]) == "0"
    assert launch.LauncherChoice("local", 2, [], "").gpu_for(["x"]) is None  # on the CPU: no GPU to give


class FakeJobs:
    """submitit's executor, without processes: generator jobs (DDPM, CycleGAN) run for `long` polls, every
    other job finishes at its first; a finished job's step becomes complete. Records each submission."""

    def __init__(self, done: set, gpus: list[str], long: int = 200):
        self.done, self.gpus, self.long = done, gpus, long
        self.active: list = []
        self.submitted: list[tuple[str, str | None]] = []  # (folder, gpu) in submission order
        self.finished: list[str] = []  # folders in completion order
        self.events: list = []

    def submit(self, fn, run_dir, folder, gpu):
        assert fn is launch.build_one
        load = collections.Counter(job.gpu for job in self.active)
        if self.gpus:  # the least loaded GPU
            assert load[gpu] == min(load[g] for g in self.gpus), (gpu, load)
        job = FakeJob(self, folder, gpu, self.long if folder.split("/")[0] in ("ddpm", "cyclegan") else 1)
        self.active.append(job)
        self.submitted.append((folder, gpu))
        self.events.append(("submit", folder, len(self.active)))
        return job


class FakeJob:
    def __init__(self, jobs: FakeJobs, folder: str, gpu, polls: int):
        self.jobs, self.folder, self.gpu, self.polls = jobs, folder, gpu, polls
        self.job_id, self.state = str(len(jobs.submitted)), "RUNNING"
        self.paths = type("Paths", (), {"stderr": Path("/nonexistent.err")})

    def done(self) -> bool:
        self.polls -= 1
        if self.polls > 0:
            return False
        if self in self.jobs.active:
            self.jobs.active.remove(self)
            self.jobs.done.add(self.folder)
            self.jobs.finished.append(self.folder)
        return True


class FakeStore:
    def __init__(self, root: Path, done: set):
        self.root, self.done = root, done

    def is_complete(self, path: Path) -> bool:
        return path.relative_to(self.root).as_posix() in self.done


def needs_generator(step) -> bool:
    return any(dep.stage in ("ddpm", "cyclegan") or needs_generator(dep) for dep in step.inputs.values())


def test_local_jobs_start_what_needs_no_generator_while_the_generators_train(gpus, tmp_path, monkeypatch):
    """The quickstart's plan through the launcher's loop with fake jobs on 2 faked GPUs, 4 at once: the
    DDPM and the CycleGAN take two slots for a long time, and in the other two every MAE and evaluation
    that needs no generator runs to completion before either generator ends; the rest follow once their
    generator is done. Never more than 4 jobs at once, each on the least loaded GPU (round-robin while
    they start together), and each job's CPU threads are cores // 4 (cores faked: 8)."""
    import rich.console
    import tomllib

    from genaug.study.plan import make_plan

    gpus(2)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(launch, "POLL_S", 0)
    cfg = load_config(None, [])
    chosen = launch.choose_launcher(cfg)
    assert (chosen.launcher, chosen.max_parallel, chosen.gpus) == ("local", 8, ["0", "1"])
    plan = make_plan(cfg)
    done: set = set()
    jobs = FakeJobs(done, chosen.gpus)
    monkeypatch.setattr(launch, "executor", lambda cfg, launcher, folder: jobs)
    console = rich.console.Console(file=open(os.devnull, "w"))
    todo = launch.build_with_jobs(plan, cfg, FakeStore(tmp_path, done), console, "local", 4, chosen.gpus)

    assert len(todo) == len(plan) and set(jobs.finished) == {step.folder for step in plan}
    assert max(active for _, _, active in jobs.events) == 4
    assert jobs.submitted[0][0].startswith("split/")  # alone: everything else needs it
    assert [gpu for _, gpu in jobs.submitted[:5]] == ["0", "0", "1", "0", "1"]  # then 4 at once, round-robin
    generators = {step.folder for step in plan if step.stage in ("ddpm", "cyclegan")}
    first_generator_done = min(jobs.finished.index(folder) for folder in generators)
    free = [step.folder for step in plan if step.folder not in generators and not needs_generator(step)]
    assert any(folder.startswith("mae/") for folder in free) and any(folder.startswith("eval/") for folder in free)
    assert all(jobs.finished.index(folder) < first_generator_done for folder in free)
    later = [step.folder for step in plan if needs_generator(step)]
    assert later and all(jobs.finished.index(folder) > first_generator_done for folder in later)
    written = tomllib.loads((tmp_path / ".launch" / "config.toml").read_text())
    assert written["runtime"]["threads"] == 2  # 8 cores // 4 jobs, on CUDA as on the CPU


def test_a_job_sees_its_gpu_and_the_runs_compile_cache(tmp_path, monkeypatch):
    """build_one sets CUDA_VISIBLE_DEVICES to its GPU and the compile cache to the run's before the step is
    built (submitit starts a job that asked for no GPU with CUDA_VISIBLE_DEVICES empty), and leaves this
    process's environment as it was."""
    from genaug.config import to_toml
    from genaug.study import build
    from genaug.study.plan import make_plan
    from genaug.study.store import LAUNCH_DIR

    for name in ("CUDA_VISIBLE_DEVICES", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    run_dir = tmp_path / "run"
    cfg = load_config(None, [f"runtime.threads={torch.get_num_threads()}"])
    (run_dir / LAUNCH_DIR).mkdir(parents=True)
    (run_dir / LAUNCH_DIR / "config.toml").write_text(to_toml(cfg))
    seen = {}

    def fake_build_step(step, cfg, store, progress, task):
        seen.update({name: os.environ.get(name) for name in
                     ("CUDA_VISIBLE_DEVICES", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")})
        return {"seconds": 0.0}

    monkeypatch.setattr(build, "build_step", fake_build_step)
    launch.build_one(str(run_dir), make_plan(cfg)[0].folder, "1")
    cache = run_dir.resolve() / ".cache"
    assert seen == {"CUDA_VISIBLE_DEVICES": "1", "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
                    "TRITON_CACHE_DIR": str(cache / "triton")}
    assert not {"CUDA_VISIBLE_DEVICES", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"} & set(os.environ)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's own cache wins
    launch.build_one(str(run_dir), make_plan(cfg)[0].folder)
    assert seen["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine") and seen["TRITON_CACHE_DIR"] is None
    assert seen["CUDA_VISIBLE_DEVICES"] is None  # no GPU given: left alone


def test_real_local_jobs_inherit_the_drivers_compile_cache(tmp_path, monkeypatch):
    """submitit's local jobs start with the driver's environment: inside `shared_compile_cache` they see the
    run's inductor cache, and (having asked for no GPU) an empty CUDA_VISIBLE_DEVICES, which is why
    `build_one` sets the job's GPU itself."""
    pytest.importorskip("submitit")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    jobs = launch.executor(load_config(None, []), "local", tmp_path / "logs")
    with launch.shared_compile_cache(tmp_path / "run"):
        with launch.sigint_not_inherited():
            cache = jobs.submit(os.getenv, "TORCHINDUCTOR_CACHE_DIR")
            visible = jobs.submit(os.getenv, "CUDA_VISIBLE_DEVICES")
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # only while the run lasts
    assert cache.result() == str((tmp_path / "run").resolve() / ".cache" / "inductor")
    assert visible.result() == ""


def test_genaug_run_without_launcher_says_what_it_chose(gpus, tmp_path, monkeypatch):
    """The CLI's default is auto: on a faked GPU, local jobs (4 at once on its one GPU), said in one line
    before the plan, with the run's compile cache set for them; on the CPU, the in-process runner as
    ever. The builders are stopped at once: what they were given is what this checks."""
    from genaug.study import runner

    given = {}

    def fake_jobs(plan, cfg, store, console, launcher, max_parallel, gpus=None):
        given.update(launcher=launcher, max_parallel=max_parallel, gpus=gpus,
                     cache=os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
        raise UserError("stopped by the test")

    def fake_in_process(plan, cfg, store, console):
        given.update(launcher="inprocess", cache=os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
        raise UserError("stopped by the test")

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(launch, "build_with_jobs", fake_jobs)
    monkeypatch.setattr(runner, "build_in_process", fake_in_process)
    monkeypatch.setenv("COLUMNS", "200")
    gpus(1)
    out = tmp_path / "gpu"
    result = CliRunner().invoke(app, ["run", "--out", str(out)])
    assert result.exit_code == 2 and "stopped by the test" in result.stderr
    assert given == {"launcher": "local", "max_parallel": 4, "gpus": ["0"],
                     "cache": str(out.resolve() / ".cache" / "inductor")}
    assert f"4 jobs at once on 1 GPU: runtime.processes_per_gpu = 4; {ONE_AT_A_TIME}" in result.output
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ

    gpus(0)
    given.clear()
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "cpu")])
    assert result.exit_code == 2 and given["launcher"] == "inprocess"
    assert "steps one at a time in this process: not on CUDA" in result.output


# --- auto compile mode ---------------------------------------------------------------------------------


def trainer(tmp_path, monkeypatch, cuda=True, steps=600, **runtime):
    monkeypatch.setattr(Trainer, "cuda", property(lambda self: cuda))
    monkeypatch.setattr(Trainer, "_synchronize", lambda self: None)  # no device to wait for
    return Trainer(RuntimeConfig(device="cpu", log_every=2, checkpoint_every=0, **runtime), steps,
                   tmp_path / "log.jsonl", "mae")


def test_auto_compile_mode_graphs_small_batches_on_cuda(tmp_path, monkeypatch):
    def decided(batch, cuda=True, world=1, **runtime):
        made = trainer(tmp_path, monkeypatch, cuda, **runtime)
        made.world = world
        return made.compile_mode_decision(batch)

    assert RuntimeConfig().compile_mode == "auto" and CUDAGRAPH_MAX_BATCH == 64
    assert decided(16) == ("reduce-overhead", "auto: batch 16 <= 64: a small-batch step is host-bound; "
                                              "CUDA graphs replay it in one launch")
    assert decided(64)[0] == "reduce-overhead" and decided(1)[0] == "reduce-overhead"
    assert decided(65)[0] == decided(256)[0] == "default" and "batch 256 > 64" in decided(256)[1]
    assert decided(16, cuda=False) == ("default", "auto: not on CUDA (no CUDA graphs)")
    assert decided(16, world=2)[0] == "default" and "2 processes" in decided(16, world=2)[1]
    assert decided(16, compile_mode="default") == ("default", "runtime.compile_mode = 'default'")
    assert decided(256, compile_mode="reduce-overhead")[0] == "reduce-overhead"


@pytest.mark.parametrize("batch, mode, marks", [(16, "reduce-overhead", 6), (128, "default", 0)])
def test_the_mode_follows_the_batch_and_the_loop_follows_the_mode(tmp_path, monkeypatch, batch, mode, marks):
    """On (faked) CUDA, auto compiles in the mode for the per-process batch the stage trains with, and
    the manifest's timing says which and why. A graphed mode marks a new CUDA-graph step before every
    step; the default mode marks none. Losses are copies either way (tests/test_fast_path.py checks the
    overwrite)."""
    compiled, step_marks = [], []
    monkeypatch.setattr(torch, "compile", lambda module, mode: compiled.append(mode) or module)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: step_marks.append(1))
    made = trainer(tmp_path, monkeypatch, steps=6, compile_min_steps=6)
    network = torch.nn.Linear(3, 1)
    forward = made.compile(network, "mae", batch=batch)
    assert forward.weight is network.weight  # what stages read from it is the network's
    made.fit(lambda i: {"loss": forward(torch.ones(batch, 3)).sum()})
    assert compiled == [mode] and made.compiled == ["mae"] and made.compile_modes == {"mae": mode}
    assert made.timing["compile_mode"] == mode and made.timing["compile_mode_reason"].startswith(f"auto: batch {batch} ")
    assert made.graphed == (mode == "reduce-overhead") and len(step_marks) == marks
    assert len(made.step_losses["loss"]) == 6


def test_a_given_batch_decides_at_once_and_the_cpu_never_waits(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, mode: compiled.append(mode) or module)
    made = trainer(tmp_path, monkeypatch)
    made.compile(torch.nn.Linear(3, 1), "unet", batch=16)
    assert compiled == ["reduce-overhead"] and made.graphed
    cpu = trainer(tmp_path, monkeypatch, cuda=False, compile="on")
    cpu.compile(torch.nn.Linear(3, 1), "mae", batch=16)  # on the CPU: default, no graphs
    assert compiled[-1] == "default" and not cpu.graphed and cpu.timing["compile_mode_reason"].startswith("auto: not on CUDA")
    for mode in ("max-autotune", "max-autotune-no-cudagraphs"):
        explicit = trainer(tmp_path, monkeypatch, compile_mode=mode)
        explicit.compile(torch.nn.Linear(3, 1), "mae", batch=16)
        assert explicit.graphed == (mode == "max-autotune")
