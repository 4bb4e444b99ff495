"""Which process this is, when `accelerate launch` or `torchrun` starts several (one per GPU).

Every process runs the same study; only the main one writes the run directory's artifacts, reports
and logs. Read from the launcher's environment (RANK / WORLD_SIZE, as torchrun and accelerate set
them), so it is known before any training stage builds an Accelerator.

The rule for batches (the same for one process and for many): every `*.batch_size` of the config is
the GLOBAL batch, all processes together; each process takes batch_size / world_size of it
(`per_process`), and learning rates are used as configured. So a study means the same thing however
many processes run it.

Under several processes, `init` joins the process group (torch.distributed; gloo on the CPU, NCCL
for CUDA tensors) and a gloo group for the small control messages genaug exchanges itself (logged
losses, the stop decision, the checkpoint to resume from, evaluation results), which travel as CPU
tensors or Python objects whatever device trains. Accelerate's Accelerator finds the group already
made and uses it.
"""

from __future__ import annotations

import os
from typing import Any

from genaug.errors import UserError

_control = None  # the gloo group of control messages, once `init` has run


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def available() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


def init() -> None:
    """Join the process group (once; a no-op in a single process). Every process must call it at the
    same point of the study: it is a collective."""
    global _control
    if world_size() <= 1 or _control is not None:
        return
    import torch
    import torch.distributed as dist

    if not available():
        raise UserError(f"WORLD_SIZE = {world_size()} but this torch build has no torch.distributed with gloo; "
                        "run genaug as one process")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())  # "cuda" means this process's GPU from here on
    if not dist.is_initialized():
        backend = "cuda:nccl,cpu:gloo" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend)
    _control = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def shutdown() -> None:
    """Leave the process group once every process is done (a no-op in a single process). Without it a
    process that finishes first tears down its connections while another still holds them, and gloo
    aborts one of them at exit ("terminate called without an active exception")."""
    global _control
    if _control is None:
        return
    import torch.distributed as dist

    dist.barrier(group=_control)
    dist.destroy_process_group()
    _control = None


def control_group():
    init()
    return _control


def barrier() -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier(group=control_group())


def all_gather_object(obj: Any) -> list[Any]:
    """[obj of process 0, obj of process 1, ...] on every process ([obj] in a single process)."""
    if world_size() <= 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj, group=control_group())
    return out


def broadcast_object(obj: Any) -> Any:
    """The main process's `obj`, on every process."""
    if world_size() <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=control_group())
    return box[0]


def all_reduce_mean(values):
    """A CPU float tensor averaged over the processes (returned as is in a single process)."""
    if world_size() <= 1:
        return values
    import torch.distributed as dist

    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM, group=control_group())
    return values / world_size()
