"""Where a study's runs go on one machine, and how often a cluster retries them (imported by the CLI: no torch).

* GPUs: with ``--workers N`` on a CUDA machine each worker process takes the next GPU of
  :func:`visible_gpus` in turn (``CUDA_VISIBLE_DEVICES`` set in the worker before it touches CUDA), so N workers
  on N GPUs train one run per GPU instead of N runs on GPU 0; more workers than GPUs share them round robin.
  With ``--gpus-per-run G`` each worker takes the next block of G GPUs instead (:func:`gpu_blocks`), and each run
  it trains is one DDP run of G processes, one per GPU of its block (:mod:`kdlab.core.processes`).
* Ray: a task whose worker died (killed, out of memory, a lost node) is retried :data:`RAY_RETRIES` times by
  default.  Every run resumes from its last checkpoint, so a retried run ends as an uninterrupted one.
"""

from __future__ import annotations

import os

RAY_RETRIES = 3


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: that variable's list when set, else
    ``0 .. device_count - 1``; empty without CUDA.  The count comes from NVML: CUDA is not initialised here."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_blocks(gpus: list[str], per_run: int = 1) -> list[str]:
    """The GPUs as the ``CUDA_VISIBLE_DEVICES`` values of the workers: consecutive blocks of ``per_run`` (worker
    ``k`` takes block ``k``, round robin when there are fewer blocks than workers; GPUs left over are unused)."""
    return [",".join(gpus[i:i + per_run]) for i in range(0, len(gpus) - per_run + 1, per_run)]


def claim_gpu(gpus: list[str], counter) -> str:
    """The next GPU (or block of GPUs, see :func:`gpu_blocks`) in turn for a starting worker: ``counter`` (a
    multiprocessing Value shared by the pool's workers, replacements included) numbers the workers as they
    start."""
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    gpu = gpus[slot % len(gpus)]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu
