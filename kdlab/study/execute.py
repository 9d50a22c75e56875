"""Run a study's plan: in order in this process, or with ``workers`` processes, each run after the runs it needs.

A run that has finished is reused (its summary is read back); an interrupted one resumes from its checkpoint;
a run whose prerequisite failed is skipped and reported.  Each run folder is locked while it trains, so two
studies sharing a folder never train the same run twice.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import KdlabError
from .plan import PlannedRun


@dataclass
class Outcome:
    run: PlannedRun
    summary: dict[str, Any] | None
    reused: bool = False
    error: str | None = None
    seconds: float = 0.0


def run_one(kind: str, config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    from ..runs import distill, train_teacher

    res = (train_teacher if kind == "teacher" else distill)(config, resume=True)
    return res.summary, res.reused


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _call(kind: str, config: dict[str, Any], cwd: str | None = None) -> tuple[dict[str, Any] | None, bool, str | None]:
    if cwd is not None:  # a Ray worker: relative paths (runs, data roots) mean what they mean for the driver
        os.chdir(cwd)
    try:
        summary, reused = run_one(kind, config)
        return summary, reused, None
    except KdlabError as e:
        return None, False, str(e)


def execute(plan: list[PlannedRun], workers: int = 1, log: Callable[[str], None] = print,
            launcher: str = "local", ray_options: dict[str, Any] | None = None) -> list[Outcome]:
    """``launcher``: ``local`` (this process, or ``workers`` processes) or ``ray`` (one Ray task per run)."""
    if launcher == "ray":
        return _ray(plan, workers, log, **(ray_options or {}))
    if workers <= 1:
        return _sequential(plan, log)
    return _parallel(plan, workers, log)


def _label(run: PlannedRun) -> str:
    who = run.method_label if run.kind == "teacher" or run.teacher_label is None else \
        f"{run.teacher_label}/{run.method_label}"
    return f"{run.kind} {run.arch} {who} seed {run.seed}"


def _report(i: int, n: int, out: Outcome, t0: float, log: Callable[[str], None]) -> None:
    if out.reused:
        return
    elapsed = time.perf_counter() - t0
    if out.error:
        log(f"[{i}/{n}] {_label(out.run)}: FAILED: {out.error}")
    else:
        left = elapsed / i * (n - i)
        log(f"[{i}/{n}] {_label(out.run)}: top-1 {out.summary['top1']:.2f}% ({out.seconds:.0f}s; study "
            f"{elapsed:.0f}s, ~{left:.0f}s left) -> {out.run.run_dir}")


def _sequential(plan: list[PlannedRun], log) -> list[Outcome]:
    outcomes: dict[Path, Outcome] = {}
    t0 = time.perf_counter()
    for i, run in enumerate(plan, 1):
        failed = [d for d in run.needs if outcomes.get(d) is not None and outcomes[d].error]
        if failed:
            out = Outcome(run, None, error=f"skipped: {failed[0]} failed")
        else:
            t = time.perf_counter()
            try:
                summary, reused = run_one(run.kind, run.config)
                out = Outcome(run, summary, reused, seconds=time.perf_counter() - t)
            except KdlabError as e:
                out = Outcome(run, None, error=str(e))
            except Exception as e:  # noqa: BLE001 - a bug in one run (e.g. a user model) must not stop the study
                out = Outcome(run, None, error=_failed(e)[2])
        outcomes[run.run_dir] = out
        _report(i, len(plan), out, t0, log)
    return [outcomes[r.run_dir] for r in plan]


def _schedule(plan: list[PlannedRun], cap: int, submit: Callable[[str, dict[str, Any]], Any],
              wait_one: Callable[[list[Any]], list[tuple[Any, tuple]]], log) -> list[Outcome]:
    """Start each run once the runs it needs have finished, at most ``cap`` at a time.

    ``submit(kind, config)`` starts a run and returns a handle; ``wait_one(handles)`` blocks until at least one
    finished and returns ``(handle, (summary, reused, error))`` pairs.
    """
    outcomes: dict[Path, Outcome] = {}
    pending = list(plan)
    running: dict[Any, tuple[PlannedRun, float]] = {}
    t0 = time.perf_counter()
    done_count = 0

    def finish(run: PlannedRun, out: Outcome) -> None:
        nonlocal done_count
        outcomes[run.run_dir] = out
        done_count += 1
        _report(done_count, len(plan), out, t0, log)

    while pending or running:
        for run in list(pending):
            if len(running) >= cap:
                break
            deps = [outcomes.get(d) for d in run.needs]
            if any(d is not None and d.error for d in deps):
                pending.remove(run)
                finish(run, Outcome(run, None, error="skipped: a run it needs failed"))
            elif all(d is not None for d in deps):
                pending.remove(run)
                config = dict(run.config)
                config["train"] = {**config["train"], "progress": "off"}  # interleaved bars are unreadable
                running[submit(run.kind, config)] = (run, time.perf_counter())
        if not running:
            continue
        for handle, (summary, reused, error) in wait_one(list(running)):
            run, started = running.pop(handle)
            finish(run, Outcome(run, summary, reused, error, time.perf_counter() - started))
    return [outcomes[r.run_dir] for r in plan]


def _failed(e: Exception) -> tuple[None, bool, str]:
    """A crashed worker or a lost Ray task must not stop the study."""
    return None, False, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def _parallel(plan: list[PlannedRun], workers: int, log) -> list[Outcome]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch/CUDA state

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,))

    pools = [new_pool()]

    def submit(kind: str, cfg: dict[str, Any]) -> Future:
        try:
            return pools[-1].submit(_call, kind, cfg)
        except BrokenProcessPool:  # a worker died (killed, out of memory): carry on with fresh processes
            pools.append(new_pool())
            return pools[-1].submit(_call, kind, cfg)

    def wait_one(handles: list[Future]) -> list[tuple[Future, tuple]]:
        finished, _ = wait(handles, return_when=FIRST_COMPLETED)
        out = []
        for f in finished:
            try:
                out.append((f, f.result()))
            except BrokenProcessPool:
                out.append((f, (None, False, "a worker process died during this run (this run or one running "
                                             "beside it was killed); rerun the study to retry it")))
            except Exception as e:  # noqa: BLE001
                out.append((f, _failed(e)))
        return out

    try:
        return _schedule(plan, workers, submit, wait_one, log)
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


def _ray(plan: list[PlannedRun], workers: int, log, address: str | None = None, gpus_per_run: float = 0.0,
         cpus_per_run: float = 1.0) -> list[Outcome]:
    """One Ray task per run, each started once the runs it needs have finished.  Workers must see the study
    folder (and data) at the driver's working directory: a shared file system on a cluster."""
    try:
        import ray
    except ImportError:
        raise KdlabError("--launcher ray needs Ray: pip install 'ray>=2.9'") from None
    started = not ray.is_initialized()
    if started:
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise KdlabError(f"cannot reach the Ray cluster {address or '(local)'}: {e}") from None
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(_call)
    cwd = os.getcwd()
    cap = workers if workers > 1 else max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_run, 1e-9)))

    def wait_one(handles: list[Any]) -> list[tuple[Any, tuple]]:
        ready, _ = ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, ray.get(ref)))
            except Exception as e:  # noqa: BLE001
                out.append((ref, _failed(e)))
        return out

    try:
        return _schedule(plan, cap, lambda kind, cfg: task.remote(kind, cfg, cwd), wait_one, log)
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str | None) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when a given cluster address does not answer."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise KdlabError(f"--ray-address: expected host:port (or ray://host:port), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise KdlabError(f"cannot reach the Ray cluster {address}: {e.strerror or e}") from None
