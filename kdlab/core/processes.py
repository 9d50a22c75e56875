"""One run as several processes on this machine, as ``torchrun --nproc_per_node=N`` starts it, from Python.

:func:`run_processes` starts ``nproc`` fresh interpreters (spawn: no forked torch or CUDA state) that call the
same function with the environment torchrun gives its workers: ``MASTER_ADDR`` 127.0.0.1 and a free
``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``, and ``OMP_NUM_THREADS``
unless set.  A kdlab run started so joins one process group (:mod:`kdlab.core.distributed`): DDP, gloo on the
CPU, NCCL on CUDA.  With a list of GPUs every process sees those GPUs (``CUDA_VISIBLE_DEVICES``) and local rank
``i`` trains on the ``i``-th.

The function's return value on rank 0 is returned.  When a process fails (raises, or ends without a word: killed,
out of memory) the others are stopped (SIGTERM, SIGKILL after ``grace`` seconds) and its error is raised, with a
note naming the process; a :class:`~kdlab.core.errors.KdlabError` keeps its one-line message.  The processes end
with the process that started them, SIGKILL of it included (:func:`~kdlab.core.lifeline.tie_to_parent`), and an
exception in it (Ctrl-C, SIGTERM turned into :class:`~kdlab.core.errors.Terminated`) stops them too.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing import connection
from typing import Any

from kdlab.core.errors import KdlabError
from kdlab.core.lifeline import tie_to_parent


class ProcessFailed(KdlabError):
    """A process of the job ended without saying why (a signal, an exit in C code)."""


def run_processes(fn: Callable[..., Any], args: tuple = (), nproc: int = 2, gpus: list[str] | None = None,
                  threads: int | None = None, grace: float = 30.0) -> Any:
    """Call ``fn(*args)`` in ``nproc`` processes of one job and return rank 0's result (``fn`` and ``args``
    picklable; ``fn`` importable by name).  ``gpus``: the GPUs the job uses (``CUDA_VISIBLE_DEVICES`` entries,
    at least ``nproc``); ``threads``: each process's torch threads (default ``OMP_NUM_THREADS``, else 1)."""
    if gpus is not None and len(gpus) < nproc:
        raise KdlabError(f"{nproc} processes need {nproc} GPUs, got {len(gpus)}: {', '.join(gpus) or 'none'}")
    threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 1)
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(nproc),
              "LOCAL_WORLD_SIZE": str(nproc), "OMP_NUM_THREADS": str(threads)}
    if gpus is not None:
        common["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    ctx = mp.get_context("spawn")
    procs: list[mp.process.BaseProcess] = []
    readers: list[connection.Connection] = []
    try:
        for rank in range(nproc):
            reader, writer = ctx.Pipe(duplex=False)
            env = {**common, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            p = ctx.Process(target=_process, args=(fn, args, env, os.getpid(), writer), name=f"kdlab-rank-{rank}")
            p.start()
            writer.close()  # the process holds the other end: its end of file says it is gone
            procs.append(p)
            readers.append(reader)
        results = _collect(procs, readers)
        for p in procs:  # each leaves right after its answer
            p.join(grace)
        return results[0]
    finally:
        _stop(procs, grace)
        for r in readers:
            r.close()


def _collect(procs: list[mp.process.BaseProcess], readers: list[connection.Connection]) -> list[Any]:
    """Every process's return value, in rank order; raises the first error that comes."""
    results: dict[int, Any] = {}
    waiting = dict(enumerate(readers))
    while waiting:
        connection.wait(list(waiting.values()))  # data, or end of file once a process is gone
        for rank, reader in list(waiting.items()):
            if not reader.poll():
                continue
            del waiting[rank]
            try:
                ok, value = reader.recv()
            except EOFError:  # gone without a word
                procs[rank].join(5.0)
                raise ProcessFailed(f"process {rank} of {len(procs)} {_ended(procs[rank].exitcode)}") from None
            if not ok:
                raise _error(value, rank, len(procs))
            results[rank] = value
    return [results[r] for r in range(len(procs))]


def _ended(code: int | None) -> str:
    if code is not None and code < 0:
        hint = " (the out-of-memory killer sends it, as does kill -9)" if code == -signal.SIGKILL else ""
        return f"was killed by {signal.Signals(-code).name}{hint}"
    return f"exited with code {code}; its error is printed above"


def _error(value: tuple[bytes | None, str], rank: int, nproc: int) -> BaseException:
    pickled, text = value
    try:
        e = pickle.loads(pickled) if pickled is not None else None
    except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt here: its text
        e = None
    e = e if isinstance(e, BaseException) else RuntimeError(text)
    if hasattr(e, "add_note"):  # Python 3.11
        e.add_note(f"raised in process {rank} of {nproc}")
    return e


def _stop(procs: list[mp.process.BaseProcess], grace: float) -> None:
    """SIGTERM to the processes still running, SIGKILL to those still running ``grace`` seconds later."""
    live = [p for p in procs if p.is_alive()]
    for p in live:
        with contextlib.suppress(OSError):
            p.terminate()
    deadline = time.monotonic() + grace
    for p in live:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _process(fn: Callable[..., Any], args: tuple, env: dict[str, str], parent: int,
             out: connection.Connection) -> None:
    """One process of the job: its environment, then ``fn``; its answer is ``(True, value)`` or
    ``(False, (pickled error, its text))``.  Leaves without the interpreter's teardown, as a torchrun worker of
    the ``kdlab`` command does (gloo's threads can abort it)."""
    os.environ.update(env)
    tie_to_parent(parent)
    import torch

    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    try:
        answer: tuple[bool, Any] = (True, fn(*args))
        _leave_process_group()
    except BaseException as e:  # noqa: BLE001 - every failure goes to the launcher, which stops the others
        answer = (False, (_pickled(e), f"{type(e).__name__}: {e}"))
    try:
        out.send(answer)
    except Exception as e:  # noqa: BLE001 - a return value that cannot be pickled
        out.send((False, (None, f"process {env['RANK']}: cannot send its result back: {type(e).__name__}: {e}")))
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0 if answer[0] else 1)


def _pickled(e: BaseException) -> bytes | None:
    try:
        return pickle.dumps(e)
    except Exception:  # noqa: BLE001
        return None


def _leave_process_group() -> None:
    distributed = sys.modules.get("kdlab.core.distributed")  # imported by the run if it joined one
    if distributed is not None:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
