"""Several processes, one run: ``torchrun --nproc_per_node=N -m kdlab ...`` trains with DistributedDataParallel.

Each process reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by torchrun) and joins the process group
(NCCL on CUDA, gloo on the CPU).  Data: every process takes its part of each global batch (``train.batch_size``
stays the global batch).  Objectives that keep per-sample state (SoTeacher's consistency buffer, CRL's history,
CRD's memory) gather the indices and values of all processes before updating it, so every process holds the same
state.  Only rank 0 writes checkpoints, metrics and summaries; metrics are reduced over the processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world


def env() -> DistEnv:
    """The process's place in the job (a single process when not launched by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    return DistEnv(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> DistEnv:
    """Join the process group if launched with several processes; returns the environment."""
    e = env()
    if e.active and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    return e


def process_device(device: torch.device) -> torch.device:
    """This process's device (its own GPU in a torchrun job); joins the process group."""
    e = env()
    if e.active and device.type == "cuda":
        device = torch.device("cuda", e.local_rank)
    setup(device)
    return device


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give every process its result, or raise its kdlab error everywhere (so that
    decisions such as 'this run has finished' are taken once, consistently)."""
    if not is_active():
        return fn()
    from ..errors import KdlabError

    payload: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            payload[0] = ("ok", fn())
        except KdlabError as e:
            payload[0] = ("error", type(e), str(e))
    dist.broadcast_object_list(payload, src=0)
    if payload[0][0] == "error":
        raise payload[0][1](payload[0][2])
    return payload[0][1]


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return not is_active() or dist.get_rank() == 0


def barrier() -> None:
    if is_active():
        dist.barrier()


def all_reduce_sum(t: Tensor) -> Tensor:
    if is_active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate ``t`` (first dimensions may differ) over the processes, in rank order."""
    if not is_active():
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


def shutdown() -> None:
    """Leave the process group (every process of a torchrun job calls this before exiting)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
