"""Several processes, one run: ``torchrun --nproc_per_node=N -m kdlab ...`` trains with DistributedDataParallel.

Each process reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by torchrun) and joins the process group
(NCCL on CUDA, gloo on the CPU).  Data: every process takes its part of each global batch (``train.batch_size``
stays the global batch).  Only rank 0 writes checkpoints, metrics and summaries; metrics are reduced over the
processes.

What keeps the processes one run (each piece is tested against a 1-process run):

* gradients: DistributedDataParallel averages them; the loop weights each process's loss by its share of the
  global batch (:func:`shard_weight`), so an uneven split still gives the gradient of the global batch's mean;
  initialisation stages that train outside DDP (AB, FSP, FT, FitNets' hint stage, SSKD's head) average their
  gradients the same way (:func:`average_gradients`);
* per-sample state (SoTeacher's consistency buffer, CRL's history, CRD's memory): the module gathers the indices
  and values of all processes before updating it, so every process holds the same state; such modules list these
  buffers in ``gathered_buffers``, which keeps them out of DDP's per-step buffer broadcast;
* terms that relate the samples of a batch to each other (SSKD's similarity rows) are computed on the global
  batch, gathered with :func:`gather_with_grad`; random draws for a batch (CRD's negatives, KD+'s mixes) are made
  for the global batch from a generator every process seeds alike, and each process takes its rows;
* batch-norm statistics: with ``train.sync_bn`` every BN layer (the model's and the method's connectors) uses the
  global batch's statistics; without it each process normalises its part of the batch, DDP broadcasts rank 0's
  running statistics before every step, and the loop broadcasts them once more at the end of each epoch, so the
  evaluated and saved model is the same on every process.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from kdlab.core.lifeline import tie_to_launcher

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
        tie_to_launcher()  # for library users: the CLI ties its process at once
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
        _say_why_when_stopped(e)
    return e


def _say_why_when_stopped(e: DistEnv) -> None:
    """torchrun stops the job's other processes (SIGTERM) when one fails: each says so in one line, instead of
    dying silently or with a traceback from inside a collective."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stopped(signum, frame) -> None:  # noqa: ARG001
        # a raw write: a signal handler must not take the logging or stdio locks the interrupted code may hold
        os.write(2, f"kdlab: process {e.rank} of {e.world}: stopped (another process of the job failed or the job "
                    "was cancelled; see the first error above)\n".encode())
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stopped)


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
    from kdlab.core.errors import KdlabError

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


def gathered_buffer_names(module: torch.nn.Module, prefix: str = "") -> list[str]:
    """Qualified names of the buffers that ``module``'s submodules keep equal across processes themselves (listed
    in their ``gathered_buffers``)."""
    names = []
    for path, m in module.named_modules(prefix=prefix.rstrip(".")):
        for b in getattr(m, "gathered_buffers", ()):
            names.append(f"{path}.{b}" if path else b)
    return names


def broadcast_state(module: torch.nn.Module, skip: set[str] = frozenset(), buffers_only: bool = False) -> None:
    """Give every process rank 0's parameters and buffers of ``module`` (except the names in ``skip``)."""
    if not is_active():
        return
    items = list(module.named_buffers()) if buffers_only else \
        [*module.named_parameters(), *module.named_buffers()]
    with torch.no_grad():
        for name, t in items:
            if name not in skip:
                dist.broadcast(t.data, 0)


def average_gradients(params) -> None:
    """Average the gradients of ``params`` over the processes (one all-reduce), as DDP does for the loop's step."""
    if not is_active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def shard_weight(part: tuple[int, int, int]) -> float:
    """Factor of a process's mean loss over its ``part = (start, stop, size)`` of the global batch such that DDP's
    average of the processes' gradients is the gradient of the mean over the whole batch (1.0 for even parts)."""
    start, stop, size = part
    if not is_active():
        return 1.0
    return dist.get_world_size() * (stop - start) / size


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        n = torch.tensor([t.shape[0]], device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[:rank + 1])
        padded = t.new_zeros((max(sizes), *t.shape[1:]))
        padded[: t.shape[0]] = t
        out = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(out, padded)
        return torch.cat([o[:s] for o, s in zip(out, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # every process's loss may depend on this process's rows: their gradient is the sum over processes
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start:ctx.stop]


class _SumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def sum_with_grad(t: Tensor) -> Tensor:
    """The sum of ``t`` over the processes, differentiable (each process's input gets every process's gradient)."""
    if not is_active():
        return t
    return _SumWithGrad.apply(t)


def gather_with_grad(t: Tensor) -> Tensor:
    """:func:`all_gather_cat` through which gradients flow back to each process's own rows."""
    if not is_active():
        return t
    return _GatherWithGrad.apply(t)
