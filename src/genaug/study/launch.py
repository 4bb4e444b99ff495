"""Study fan-out: every step of the plan is a submitit job, submitted once its inputs are complete.

    genaug run CONFIG --launcher local --max-parallel 2     jobs as processes on this machine
    genaug run CONFIG --launcher slurm --max-parallel 32    jobs on a SLURM cluster ([slurm] in the config)

The driver (this process) holds the run directory's lock, writes the resolved config the jobs read
(`RUN_DIR/.launch/config.toml`), and loops: submit every step whose inputs are complete, at most
`max_parallel` at a time, and wait. Each job runs `build_one(RUN_DIR, FOLDER)`, which builds that one
step through the store's atomic protocol, so the run directory looks exactly as an in-process run
leaves it. A job that fails is recorded in `RUN_DIR/.launch/failed.json` with its log, steps that need
its output are not submitted, and the driver ends with one line naming the first failure. Running the
same command again submits only what is missing; a job killed midway resumes from its checkpoint.

Without --launcher (`choose_launcher`): on CUDA in one process, local jobs, runtime.processes_per_gpu per
visible GPU at once, each job given one GPU (the one with the fewest running jobs); on the CPU or under
several processes, in-process. Every process of a run, driver and jobs alike, shares one inductor /
Triton cache in the run directory (`shared_compile_cache`), so a network is compiled once per run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from genaug.config import Config, to_toml
from genaug.distributed import world_size
from genaug.engine import resolve_device, stop_requested
from genaug.errors import Interrupted, UserError
from genaug.study.plan import Step
from genaug.study.store import FAILED_FILE, LAUNCH_DIR, Store, write_json_atomic, write_text_atomic

POLL_S = 0.5


COMPILE_CACHE_DIR = ".cache"  # in the run directory: inductor/ and triton/, shared by every process of a run


@dataclass
class LauncherChoice:
    launcher: str  # inprocess, local or slurm
    max_parallel: int
    gpus: list[str]  # local jobs on CUDA: the CUDA_VISIBLE_DEVICES names the jobs are spread over; else empty
    why: str  # the one line `run_study` prints

    def gpu_for(self, running: list[str]) -> str | None:
        """The GPU for the next job, given those of the jobs running: the one with the fewest of them, the
        first on ties (so jobs submitted together go round-robin)."""
        if not self.gpus:
            return None
        return min(self.gpus, key=lambda gpu: (running.count(gpu), self.gpus.index(gpu)))


def visible_gpus() -> list[str]:
    """This process's CUDA devices as CUDA_VISIBLE_DEVICES names them (indices, or UUIDs where it lists
    those), one per device torch sees: what a job is given to see just one of them."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [name.strip() for name in listed.split(",") if name.strip()][:count]


def choose_launcher(cfg: Config, launcher: str = "auto", max_parallel: int | None = None) -> LauncherChoice:
    """How `genaug run` builds the plan's steps. Explicit options win; `launcher` "auto" (no --launcher):

    - several processes (`accelerate launch`, `torchrun`): in-process; they train each step together;
    - --max-parallel K given: K > 1 local jobs, K = 1 in-process;
    - on CUDA: local jobs, runtime.processes_per_gpu per visible GPU at once (an eager batch-16 MAE
      leaves an H200 mostly idle: 4 processes side by side gave 3.6x one's images/s, 8 gave 4.6x);
    - on the CPU: in-process, one step after another (unchanged: the same results as ever).

    --launcher local without --max-parallel: processes_per_gpu per GPU on CUDA, 1 on the CPU. Local
    jobs on CUDA each see one GPU, the one with the fewest running jobs (`LauncherChoice.gpu_for`)."""
    cuda = resolve_device(cfg.runtime) == "cuda"
    per_gpu = cfg.runtime.processes_per_gpu
    gpus = visible_gpus() if cuda else []
    one_at_a_time = "--launcher inprocess to run one step at a time"
    if launcher == "auto":
        if world_size() > 1:
            return LauncherChoice("inprocess", 1, [], f"steps one at a time, in each of the {world_size()} processes "
                                  "(accelerate launch / torchrun: they train every step together)")
        if max_parallel == 1:
            return LauncherChoice("inprocess", 1, [], "steps one at a time in this process: --max-parallel 1")
        if max_parallel is None and not cuda:
            return LauncherChoice("inprocess", 1, [], "steps one at a time in this process: not on CUDA; "
                                  "--launcher local --max-parallel K runs K at once")
        launcher = "local"
    if launcher == "inprocess":
        return LauncherChoice("inprocess", 1, [], "steps one at a time in this process: --launcher inprocess")
    if max_parallel is not None:
        why = f"--max-parallel {max_parallel}"
    elif launcher == "local" and cuda:
        max_parallel, why = per_gpu * len(gpus), f"runtime.processes_per_gpu = {per_gpu}"
    else:
        max_parallel, why = 1, "--max-parallel not given"
    if launcher == "slurm":
        return LauncherChoice("slurm", max_parallel, [], f"{max_parallel} SLURM job(s) at once: {why}")
    where = f"on {len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" if cuda else "on the CPU"
    return LauncherChoice("local", max_parallel, gpus if cuda else [],
                          f"{max_parallel} job{'s' if max_parallel != 1 else ''} at once {where}: {why}; {one_at_a_time}")


def compile_cache_env(run_dir: Path) -> dict[str, str]:
    """The cache variables to set for a run in `run_dir`: inductor's and Triton's caches in
    RUN_DIR/.cache, unless the user set TORCHINDUCTOR_CACHE_DIR (Triton's then follows it, as inductor
    does by default) or TRITON_CACHE_DIR. Only CUDA runs compile by default; on the CPU they stay empty."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return {}
    root = Path(run_dir).resolve() / COMPILE_CACHE_DIR
    env = {"TORCHINDUCTOR_CACHE_DIR": str(root / "inductor")}
    if "TRITON_CACHE_DIR" not in os.environ:
        env["TRITON_CACHE_DIR"] = str(root / "triton")
    return env


@contextmanager
def environment(values: dict[str, str]):
    """os.environ with `values` set, as before afterwards (processes started inside inherit them)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def shared_compile_cache(run_dir: Path):
    """Inside: every compile of this process, and of the jobs it starts, uses the run's cache."""
    return environment(compile_cache_env(run_dir))


def job_config(cfg: Config, launcher: str, max_parallel: int) -> Config:
    """The config the jobs run: local jobs share this machine's cores (runtime.threads = 0 becomes an
    equal share), SLURM jobs take what they asked for."""
    if launcher == "local" and cfg.runtime.threads == 0:
        share = max(1, (os.cpu_count() or 1) // max_parallel)
        return cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"threads": share})})
    return cfg


def executor(cfg: Config, launcher: str, folder: Path):
    import submitit

    try:
        made = submitit.AutoExecutor(folder=folder, cluster="local" if launcher == "local" else "slurm")
    except RuntimeError as e:  # submitit's "Could not detect srun": not on a SLURM cluster
        raise UserError(f"--launcher {launcher}: {str(e).splitlines()[0]}; use --launcher local on this "
                        "machine") from None
    slurm = cfg.slurm
    if launcher == "slurm":
        made.update_parameters(timeout_min=slurm.time_min, gpus_per_node=slurm.gpus_per_job,
                               cpus_per_task=slurm.cpus_per_job, mem_gb=slurm.mem_gb, nodes=1, tasks_per_node=1,
                               **({"slurm_partition": slurm.partition} if slurm.partition else {}))
    else:
        made.update_parameters(timeout_min=slurm.time_min, gpus_per_node=0)
    return made


def build_with_jobs(plan: list[Step], cfg: Config, store: Store, console: Console, launcher: str,
                    max_parallel: int, gpus: list[str] | None = None) -> list[Step]:
    """Build the plan's missing steps as jobs; -> the steps that were missing. Raises UserError when a
    job failed (after every job that could run has run). `gpus`: local jobs on CUDA, each job sees one
    of these (CUDA_VISIBLE_DEVICES), the one with the fewest running jobs."""
    choice = LauncherChoice(launcher, max_parallel, list(gpus or []), "")
    gpu_of: dict[str, str | None] = {}  # running job's folder -> its GPU
    launch = store.root / LAUNCH_DIR
    launch.mkdir(exist_ok=True)
    config_path = launch / "config.toml"
    write_text_atomic(config_path, to_toml(job_config(cfg, launcher, max_parallel)))
    jobs = executor(cfg, launcher, launch / "logs")
    complete = lambda step: store.is_complete(store.root / step.folder)  # noqa: E731
    todo = [step for step in plan if not complete(step)]
    waiting = list(todo)
    running: dict[str, tuple[Step, object]] = {}
    failed: dict[str, dict] = {}
    write_json_atomic(launch / FAILED_FILE, failed)  # this attempt's failures only
    while waiting or running:
        if stop_requested():  # Ctrl-C: submit nothing more; the jobs checkpoint and stop (and resume next time)
            for step, job in running.values():
                terminate(job)
            deadline = time.time() + 120
            while time.time() < deadline and not all(job.done() for _, job in running.values()):
                time.sleep(POLL_S)
            # a job whose step is complete was only exiting: it is not counted as cancelled
            cancelled = sum(not complete(step) for step, _ in running.values())
            raise Interrupted(f"interrupted: {cancelled} running job(s) cancelled, {len(waiting)} not submitted; "
                              "every completed stage is kept; run the same genaug command again to resume")
        for folder, (step, job) in list(running.items()):
            if not job.done():
                continue
            del running[folder]
            if complete(step):
                console.print(f"done {step.stage} {step.name} (job {job.job_id})")
            else:
                failed[folder] = {"step": f"{step.stage} {step.name}", "job": str(job.job_id),
                                  "log": str(job.paths.stderr), "state": job.state}
                write_json_atomic(launch / FAILED_FILE, failed)  # for `genaug status` while the run goes on
                console.print(f"failed {step.stage} {step.name} (job {job.job_id}); log: {job.paths.stderr}")
        blocked = blocked_steps(waiting, failed)  # never submitted: an input failed
        waiting = [s for s in waiting if s not in blocked]
        ready = [s for s in waiting if all(complete(dep) for dep in s.inputs.values())]
        for step in ready[: max(0, max_parallel - len(running))]:
            gpu = choice.gpu_for([gpu_of[folder] for folder in running])
            with sigint_not_inherited():
                job = jobs.submit(build_one, str(store.root), step.folder, gpu)
            running[step.folder] = (step, job)
            gpu_of[step.folder] = gpu
            waiting.remove(step)
            console.print(f"submitted {step.stage} {step.name} (job {job.job_id}{'' if gpu is None else f', GPU {gpu}'})")
        if running:
            time.sleep(POLL_S)
        elif waiting and not ready:
            raise RuntimeError(f"launcher: {waiting[0].folder} waits on a step that is neither complete nor queued")
    write_json_atomic(launch / FAILED_FILE, failed)
    if failed:
        first = next(iter(failed.values()))
        raise UserError(f"{len(failed)} job(s) failed, first {first['step']} (job {first['job']}): see {first['log']}; "
                        "run the same command again to resubmit only what is missing")
    return todo


@contextmanager
def sigint_not_inherited():
    """Processes started in here (submitit's local controller and, through it, the job) ignore SIGINT.

    A terminal's Ctrl-C goes to the whole process group: without this, submitit's controllers die of it
    with a traceback, and each job would see it and then the driver's SIGTERM, a second stop signal
    that ends it at once, without its checkpoint. So the driver alone takes the Ctrl-C and sends each
    job one SIGTERM (`terminate`), on which the job checkpoints and stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the child processes started now
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def terminate(job) -> None:
    """Ask a job to checkpoint and stop: SIGTERM, which the job treats like Ctrl-C. SLURM's scancel sends
    it; submitit's local controller forwards it to its task (its own cancel sends SIGINT, which the
    controller does not handle and dies of, with a traceback)."""
    process = getattr(job, "_process", None)  # a local job's controller process
    if process is not None:
        process.send_signal(signal.SIGTERM)
    else:
        job.cancel(check=False)


def blocked_steps(waiting: list[Step], failed: dict[str, dict]) -> list[Step]:
    """Steps in `waiting` that depend, directly or through other waiting steps, on a failed folder."""
    blocked: list[Step] = []
    changed = True
    while changed:
        changed = False
        for step in waiting:
            if step not in blocked and any(dep.folder in failed or dep in blocked for dep in step.inputs.values()):
                blocked.append(step)
                changed = True
    return blocked


def build_one(run_dir: str, folder: str, gpu: str | None = None) -> None:
    """One job: build the step `folder` of the study whose resolved config the driver wrote. A SIGTERM (the
    driver's answer to Ctrl-C, forwarded by submitit's controller; what SLURM sends before it cancels or
    pre-empts) checkpoints the current training step and stops. SIGINT is left as the job inherited it:
    ignored under the local launcher (`sigint_not_inherited`), so a terminal's Ctrl-C reaches the driver only.

    `gpu`: the one CUDA device this job sees (CUDA_VISIBLE_DEVICES, set here before anything touches CUDA;
    submitit's local executor starts a job that asked for no GPU with it empty). The run's compile cache
    is the driver's (`shared_compile_cache`), inherited, or set here when the job did not inherit it."""
    env = compile_cache_env(Path(run_dir))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    with environment(env):
        _build_one(run_dir, folder)


def _build_one(run_dir: str, folder: str) -> None:
    from rich.progress import Progress

    from genaug.config import load_config
    from genaug.engine import set_threads
    from genaug.study.plan import make_plan
    from genaug.study.build import build_step, stop_on_ctrl_c

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / LAUNCH_DIR / "config.toml", [])
    step = next((s for s in make_plan(cfg) if s.folder == folder), None)
    if step is None:
        raise UserError(f"{folder}: no such step in the plan of {run_dir / LAUNCH_DIR / 'config.toml'}")
    store = Store(run_dir)
    if store.is_complete(run_dir / step.folder):
        return
    set_threads(cfg.runtime)
    console = Console(force_terminal=False)
    with stop_on_ctrl_c((signal.SIGTERM,)), Progress(console=console, disable=True) as progress:
        task = progress.add_task(step.name, total=step.work, start=False)
        manifest = build_step(step, cfg, store, progress, task)
    console.print(f"done {step.stage} {step.name} in {manifest['seconds']:.1f} s")
