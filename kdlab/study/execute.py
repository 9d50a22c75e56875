"""Run a study's plan: in order in this process, or with ``workers`` processes, each run after the runs it needs.

A run that has finished is reused (its summary is read back); an interrupted one resumes from its checkpoint;
a run whose prerequisite failed is skipped and reported.  Each run folder is locked while it trains, so two
studies sharing a folder never train the same run twice.

Interrupts: the worker processes ignore Ctrl-C (a terminal sends SIGINT to every process of the job); the study
answers it, or the SIGTERM the ``kdlab`` command turns into :class:`~kdlab.core.errors.Terminated`, by stopping its
workers: each gets SIGTERM, which unwinds the run it trains as Ctrl-C would (``finally`` blocks run, the run folder
stays resumable), then ends the worker quietly; the interrupt then goes on up to the caller.

Several GPUs per run (``gpus_per_run``): each run is one DDP run of one process per GPU
(:func:`~kdlab.core.processes.run_processes`).  Locally every worker owns a block of that many GPUs
(:func:`~kdlab.study.placement.gpu_blocks`) and starts the processes of each run it trains on them; on Ray a task
starts them on the GPUs Ray gave it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from multiprocessing import spawn
from pathlib import Path
from typing import Any

from kdlab.core.errors import ConfigError, KdlabError, Terminated
from kdlab.study.placement import RAY_RETRIES, claim_gpu, gpu_blocks, visible_gpus
from kdlab.study.plan import PlannedRun


@dataclass
class Outcome:
    run: PlannedRun
    summary: dict[str, Any] | None
    reused: bool = False
    error: str | None = None
    seconds: float = 0.0


def run_one(kind: str, config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    from kdlab.runs.student import distill
    from kdlab.runs.teacher import train_teacher

    res = (train_teacher if kind == "teacher" else distill)(config, resume=True)
    return res.summary, res.reused


Result = tuple[dict[str, Any] | None, bool, str | None]  # summary, reused, error


def run_task(items: list[tuple[str, dict[str, Any]]]) -> list[Result]:
    """Train one task: a run, or a group of student runs of one teacher (:func:`kdlab.runs.distill_group`)."""
    if len(items) == 1:
        kind, config = items[0]
        try:
            summary, reused = run_one(kind, config)
            return [(summary, reused, None)]
        except KdlabError as e:
            return [(None, False, str(e))]
    from kdlab.runs.student import distill_group

    try:
        results = distill_group([c for _, c in items], resume=True)
    except KdlabError as e:  # the group's own data or teacher: every member's error
        return [(None, False, str(e))] * len(items)
    return [(None, False, str(r) if isinstance(r, KdlabError) else failed_result(r)[2]) if isinstance(r, BaseException)
            else (r.summary, r.reused, None) for r in results]


def _init_worker(threads: int, parent: int | None = None, gpus: list[str] | None = None, counter=None) -> None:
    # SIGINT and SIGTERM were blocked while this process started (see _WorkerProcess): neither interrupted its
    # imports with a traceback.  Ctrl-C is the study's to answer (it stops its workers): ignored from now on, one
    # pending dropped; SIGTERM (the study stopping it) ends it quietly, one pending now
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED_WHILE_STARTING)
    if gpus:  # before torch touches CUDA
        claim_gpu(gpus, counter)
    import torch

    torch.set_num_threads(threads)
    if parent is not None:
        threading.Thread(target=_die_with, args=(parent,), name="kdlab-parent-watch", daemon=True).start()


def _die_with(parent: int, every: float = 0.5) -> None:
    """End this worker once the study that started it is gone, whatever ended the study (SIGKILL included, which
    no handler in the study sees): an orphaned worker would otherwise train on, holding memory, for ever."""
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            os._exit(70)


_task_running = False  # in a worker process: a task is being trained
_stopping = False  # in a worker process: SIGTERM came during a task, which is unwinding
_STOPPED_CODE = 128 + signal.SIGTERM  # a worker's exit status once stopped (what a shell reports for SIGTERM)


def _stop_worker(signum: int, frame: Any) -> None:  # noqa: ARG001
    """A worker's SIGTERM (its study stops it, or someone else does).  During a task, the task unwinds as Ctrl-C
    would (``finally`` blocks run, locks are released, the run folder stays resumable; a second SIGTERM meanwhile
    is ignored), then the worker ends (see :func:`_call`).  Between tasks there is nothing to unwind: it ends at
    once.  Either way without a traceback, and without waiting for word from the pool: the pool sees its workers
    end and reaps them."""
    global _stopping
    if _task_running:
        if not _stopping:
            _stopping = True
            raise Terminated("stopped by SIGTERM")
        return
    _exit_quietly()


def _exit_quietly() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_STOPPED_CODE)


def _call(items: list[tuple[str, dict[str, Any]]], cwd: str | None = None, nproc: int = 1,
          gpus: list[str] | None = None) -> list[Result]:
    """Train a task in this worker, or with ``nproc > 1`` as that many processes of one DDP run, on ``gpus``
    (default: the worker's ``CUDA_VISIBLE_DEVICES``)."""
    global _task_running
    if cwd is not None:  # a Ray worker: relative paths (runs, data roots) mean what they mean for the driver
        os.chdir(cwd)
    try:
        _task_running = True  # in the try: a SIGTERM on either side of this line is handled
        if nproc > 1:
            import torch

            from kdlab.core.processes import run_processes

            # a SIGTERM meanwhile stops the processes, and the run folder stays resumable
            return run_processes(run_task, (items,), nproc, gpus, threads=max(1, torch.get_num_threads() // nproc))
        return run_task(items)
    except Terminated:
        if _stopping:  # this worker's own SIGTERM: the run has unwound; no multiprocessing lock is held here
            _exit_quietly()
        raise
    finally:
        _task_running = False


def execute(plan: list[PlannedRun], workers: int = 1, log: Callable[[str], None] = print,
            launcher: str = "local", ray_options: dict[str, Any] | None = None, group_size: int = 1,
            gpus_per_run: float | None = None) -> list[Outcome]:
    """``launcher``: ``local`` (this process, or ``workers`` processes) or ``ray`` (one Ray task per run or
    group); ``group_size``: train up to this many students of one teacher together (see :func:`make_tasks`);
    ``gpus_per_run``: see :func:`processes_per_run` (on Ray it may come in ``ray_options`` too)."""
    tasks = make_tasks(plan, group_size)
    if launcher == "ray":
        options = dict(ray_options or {})
        if gpus_per_run is not None:
            options["gpus_per_run"] = gpus_per_run
        return _ray(plan, tasks, workers, log, **options)
    nproc = processes_per_run(launcher, gpus_per_run)
    if workers <= 1 and nproc == 1:
        return _sequential(plan, tasks, log)
    return _parallel(plan, tasks, workers, log, nproc)


def processes_per_run(launcher: str, gpus_per_run: float | None) -> int:
    """How many processes each run trains as, for ``gpus_per_run`` GPUs per run: one per GPU (a DDP run) from 2
    GPUs on, else 1.  Local: a whole number of the GPUs visible here (default 1); Ray: what each task reserves
    (default 0), a whole number from 2 on.  A :class:`~kdlab.core.errors.ConfigError` when it cannot be."""
    if launcher == "ray":
        g = 0.0 if gpus_per_run is None else float(gpus_per_run)
        if g < 0 or (g > 1 and not g.is_integer()):
            raise ConfigError(f"--gpus-per-run: a Ray task takes a fraction of one GPU or a whole number of GPUs, "
                              f"got {gpus_per_run}")
        return int(g) if g >= 2 else 1
    g = 1.0 if gpus_per_run is None else float(gpus_per_run)
    if not g.is_integer() or g < 1:
        raise ConfigError(f"--gpus-per-run: the local launcher takes a whole number of GPUs, at least 1, got "
                          f"{gpus_per_run}")
    if g > 1:
        gpus = visible_gpus()
        if not gpus:
            raise ConfigError(f"--gpus-per-run {g:.0f}: no CUDA GPU visible here (a run of several GPUs is one "
                              "process per GPU)")
        if g > len(gpus):
            raise ConfigError(f"--gpus-per-run {g:.0f}: only {len(gpus)} GPU(s) visible here "
                              f"({', '.join(gpus)})")
    return int(g)


@dataclass(eq=False)  # a task is its own handle in the sequential schedule: hashed by identity
class Task:
    """What one worker trains at once: a run, or a group of student runs that share teacher, seed, data and
    loop settings."""

    runs: list[PlannedRun]

    @property
    def needs(self) -> list[Path]:
        own = {r.run_dir for r in self.runs}
        return list(dict.fromkeys(d for r in self.runs for d in r.needs if d not in own))


def make_tasks(plan: list[PlannedRun], group_size: int = 1) -> list[Task]:
    """The plan's runs as tasks, in plan order (a group where its first member is): student runs of one teacher
    checkpoint with the same seed, data and loop settings form groups of at most ``group_size``."""
    if group_size <= 1:
        return [Task([r]) for r in plan]
    from kdlab.config import load_config
    from kdlab.config.schema import DistillRunConfig
    from kdlab.runs.resolve import group_key

    tasks: list[Task] = []
    open_groups: dict[tuple, Task] = {}
    for run in plan:
        if run.kind == "teacher":
            tasks.append(Task([run]))
            continue
        plain = load_config(DistillRunConfig, run.config).model_dump(mode="json")
        key = (run.kind, tuple(run.needs), group_key(plain))
        task = open_groups.get(key)
        if task is None or len(task.runs) >= group_size:
            task = open_groups[key] = Task([])
            tasks.append(task)
        task.runs.append(run)
    return tasks


def run_label(run: PlannedRun) -> str:
    who = run.method_label if run.kind == "teacher" or run.teacher_label is None else \
        f"{run.teacher_label}/{run.method_label}"
    return f"{run.kind} {run.arch} {who} seed {run.seed}"


def _report(i: int, n: int, out: Outcome, t0: float, log: Callable[[str], None]) -> None:
    if out.reused:
        return
    elapsed = time.perf_counter() - t0
    if out.error:
        log(f"[{i}/{n}] {run_label(out.run)}: FAILED: {out.error}")
    else:
        left = elapsed / i * (n - i)
        log(f"[{i}/{n}] {run_label(out.run)}: top-1 {out.summary['top1']:.2f}% ({out.seconds:.0f}s; study "
            f"{elapsed:.0f}s, ~{left:.0f}s left) -> {out.run.run_dir}")


def task_items(task: Task, quiet: bool = False) -> list[tuple[str, dict[str, Any]]]:
    items = []
    for run in task.runs:
        config = dict(run.config)
        if quiet:
            config["train"] = {**config["train"], "progress": "off"}  # interleaved bars are unreadable
        items.append((run.kind, config))
    return items


def _sequential(plan: list[PlannedRun], tasks: list[Task], log) -> list[Outcome]:
    def submit(task: Task) -> list[Result]:
        try:
            return run_task(task_items(task))
        except Exception as e:  # noqa: BLE001 - a bug in one run (e.g. a user model) must not stop the study
            return [failed_result(e)] * len(task.runs)

    return schedule(plan, tasks, 1, lambda task: task, lambda handles: [(h, submit(h)) for h in handles[:1]], log)


def schedule(plan: list[PlannedRun], tasks: list[Task], cap: int, submit: Callable[..., Any],
             wait_one: Callable[[list[Any]], list[tuple[Any, list[Result]]]], log, early: bool = False
             ) -> list[Outcome]:
    """Start each task once the runs it needs have finished, at most ``cap`` at a time.

    ``submit(task)`` starts a task and returns a handle; ``wait_one(handles)`` blocks until at least one
    finished and returns ``(handle, [(summary, reused, error) per run])`` pairs.  ``early``: the launcher orders
    the tasks itself (Slurm's job dependencies): a task is submitted as soon as the tasks it needs are, with
    ``submit(task, handles of the unfinished tasks it needs)``, and counts against ``cap`` while it waits.
    """
    outcomes: dict[Path, Outcome] = {}
    planned = {r.run_dir for r in plan}  # a run it needs from outside the plan is there already (or reports)
    pending = list(tasks)
    running: dict[Any, tuple[Task, float]] = {}
    handle_of: dict[Path, Any] = {}  # a run's task's handle while it runs
    t0 = time.perf_counter()
    done_count = 0

    def finish(run: PlannedRun, out: Outcome) -> None:
        nonlocal done_count
        outcomes[run.run_dir] = out
        done_count += 1
        _report(done_count, len(plan), out, t0, log)

    while pending or running:
        for task in list(pending):
            if len(running) >= cap:
                break
            deps = [outcomes.get(d) for d in task.needs if d in planned]
            failed = next((d for d in deps if d is not None and d.error), None)
            waiting = [handle_of[d] for d in task.needs if d in planned and d not in outcomes and d in handle_of]
            if failed is not None:
                pending.remove(task)
                for run in task.runs:
                    finish(run, Outcome(run, None, error=f"skipped: {failed.run.run_dir} failed"))
            elif all(d is not None for d in deps) or (early and len(waiting) == sum(d is None for d in deps)):
                pending.remove(task)
                handle = submit(task, list(dict.fromkeys(waiting))) if early else submit(task)
                running[handle] = (task, time.perf_counter())
                handle_of.update((r.run_dir, handle) for r in task.runs)
        if not running:
            continue
        for handle, results in wait_one(list(running)):
            task, started = running.pop(handle)
            seconds = (time.perf_counter() - started) / len(task.runs)
            for run, (summary, reused, error) in zip(task.runs, results):
                finish(run, Outcome(run, summary, reused, error, seconds))
    return [outcomes[r.run_dir] for r in plan]


def failed_result(e: Exception) -> tuple[None, bool, str]:
    """A crashed worker or a lost Ray task must not stop the study."""
    return None, False, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def worker_pool(workers: int, ctx: WorkerContext, threads: int, gpus: list[str] | None = None,
                counter=None) -> ProcessPoolExecutor:
    """``workers`` processes of ``threads`` threads each, tied to this process; with ``gpus``, each takes the
    next of them as it starts (``counter``: a Value shared by every pool of the study, so that replacements go on
    in turn)."""
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(threads, os.getpid(), gpus, counter))


def _parallel(plan: list[PlannedRun], tasks: list[Task], workers: int, log, nproc: int = 1) -> list[Outcome]:
    """``workers`` worker processes; with ``nproc > 1`` each owns ``nproc`` GPUs and trains each of its runs as
    ``nproc`` processes on them."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    # a script's module-adapter model defined in the script itself is found only if the workers import it
    keep_main = any("__main__" in repr(c) for r in plan for c in [r.config])

    gpus = visible_gpus()
    blocks = gpu_blocks(gpus, nproc)
    counter = WorkerContext().Value("i", 0) if blocks else None
    if nproc > 1:
        log(f"{workers} worker{'s' if workers > 1 else ''} on GPUs {', '.join(gpus)} (CUDA_VISIBLE_DEVICES), "
            f"{nproc} each in turn ({' / '.join(blocks)}); each run trains as {nproc} processes, one per GPU")
    elif gpus:
        log(f"{workers} workers on GPUs {', '.join(gpus)} (CUDA_VISIBLE_DEVICES), one in turn each")

    def new_pool() -> tuple[ProcessPoolExecutor, WorkerContext]:
        ctx = WorkerContext(keep_main)
        return worker_pool(workers, ctx, threads, blocks, counter), ctx

    pools = [new_pool()]

    sizes: dict[Future, tuple[int, WorkerContext]] = {}

    def submit(task: Task) -> Future:
        try:
            f = pools[-1][0].submit(_call, task_items(task, quiet=True), None, nproc)
        except BrokenProcessPool:  # a worker died (killed, out of memory): carry on with fresh processes
            pools.append(new_pool())
            f = pools[-1][0].submit(_call, task_items(task, quiet=True), None, nproc)
        sizes[f] = (len(task.runs), pools[-1][1])
        return f

    def wait_one(handles: list[Future]) -> list[tuple[Future, list[Result]]]:
        finished, _ = wait(handles, return_when=FIRST_COMPLETED)
        out = []
        for f in finished:
            n, ctx = sizes[f]
            try:
                out.append((f, f.result()))
            except BrokenProcessPool:
                out.append((f, [(None, False, f"a worker process died during this run or one running beside it "
                                              f"({ctx.death_cause()}); rerun the study to retry it")] * n))
            except Exception as e:  # noqa: BLE001
                out.append((f, [failed_result(e)] * n))
        return out

    try:
        return schedule(plan, tasks, workers, submit, wait_one, log)
    except BaseException:  # Ctrl-C, SIGTERM (the kdlab command's Terminated), a bug: stop the runs in training
        for pool, ctx in pools:
            pool.shutdown(wait=False, cancel_futures=True)  # nothing new starts
            ctx.stop()
        raise
    finally:
        for pool, _ in pools:
            pool.shutdown(wait=True, cancel_futures=True)


_BLOCKED_WHILE_STARTING = {signal.SIGINT, signal.SIGTERM}


class _WorkerProcess(mp.context.SpawnProcess):
    keep_main = False

    @staticmethod
    def _Popen(process_obj):
        # Spawn re-runs the parent's main script in every worker, and a script without an
        # ``if __name__ == "__main__":`` guard would start its study again there and die.  The workers need
        # nothing from the script (a task is plain config), so unless it names ``__main__`` they skip it.
        get = spawn.get_preparation_data
        if not process_obj.keep_main:
            def prep(name: str) -> dict[str, Any]:
                data = get(name)
                data.pop("init_main_from_name", None)
                data.pop("init_main_from_path", None)
                return data

            spawn.get_preparation_data = prep
        # SIGINT and SIGTERM blocked while the worker starts, which it inherits: a Ctrl-C meanwhile would interrupt
        # its imports with a traceback (_init_worker unblocks them; this thread gets its own when unblocked)
        blocked = hasattr(signal, "pthread_sigmask")
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED_WHILE_STARTING) if blocked else None
        try:
            popen = mp.context.SpawnProcess._Popen(process_obj)
        finally:
            spawn.get_preparation_data = get
            if blocked:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return popen


class WorkerContext(mp.context.SpawnContext):
    """A fresh interpreter per worker (no forked torch/CUDA state) that remembers its processes, so that a
    worker's death can be reported with its cause (the signal or exit code)."""

    def __init__(self, keep_main: bool = False):
        super().__init__()
        self.started: list[mp.process.BaseProcess] = []
        self.keep_main = keep_main

    def Process(self, *args: Any, **kwargs: Any) -> mp.process.BaseProcess:  # noqa: N802 (the context's API)
        p = _WorkerProcess(*args, **kwargs)
        p.keep_main = self.keep_main  # travels with the pickled process object: a plain bool
        self.started.append(p)
        return p

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to every live worker, which ends it once the run it trains has unwound (see
        :func:`_stop_worker`); one still running after ``grace`` seconds is killed.  The pool reaps them."""
        live = [p for p in self.started if p.pid is not None and not _ended(p)]
        for p in live:
            with contextlib.suppress(OSError, ValueError):  # ended meanwhile
                p.terminate()
        deadline = time.monotonic() + grace
        while live and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                mp_connection.wait([p.sentinel for p in live], timeout=max(0.0, deadline - time.monotonic()))
            live = [p for p in live if not _ended(p)]
        for p in live:
            with contextlib.suppress(OSError, ValueError):
                p.kill()

    def death_cause(self) -> str:
        # the pool's own thread reaps the dead workers meanwhile: until it has, their exit codes read as unknown
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(p.pid is not None and p.exitcode is None for p in self.started):
            time.sleep(0.05)
        codes = [(p.pid, p.exitcode) for p in self.started if p.pid is not None]
        # the pool terminates the survivors (SIGTERM) once one has died: the culprit is the other code
        dead = [c for c in codes if c[1] not in (None, 0, -signal.SIGTERM, _STOPPED_CODE)] or \
            [c for c in codes if c[1]]
        if not dead:
            return "no exit status known"
        pid, code = dead[0]
        if code == _STOPPED_CODE:
            return f"worker {pid} was stopped by SIGTERM"
        if code < 0:
            name = signal.Signals(-code).name
            hint = ": the out-of-memory killer sends it, as does kill -9" if code == -signal.SIGKILL else ""
            return f"worker {pid} was killed by {name}{hint}"
        return f"worker {pid} exited with code {code}; its error is printed above"


def _ended(p: mp.process.BaseProcess) -> bool:
    """Whether ``p`` has exited, without reaping it (the pool's own thread does)."""
    try:
        return bool(mp_connection.wait([p.sentinel], timeout=0))
    except (OSError, ValueError):
        return True


def _ray(plan: list[PlannedRun], tasks: list[Task], workers: int, log, address: str | None = None,
         gpus_per_run: float | None = 0.0, cpus_per_run: float = 1.0, retries: int = RAY_RETRIES
         ) -> list[Outcome]:
    """One Ray task per run (or group), each started once the runs it needs have finished.  Workers must see the
    study folder (and data) at the driver's working directory: a shared file system on a cluster.  A task of 2
    GPUs or more trains its run as one process per GPU."""
    nproc = processes_per_run("ray", gpus_per_run)
    gpus_per_run = gpus_per_run or 0.0
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
    # a retried task resumes its runs from their checkpoints (a run's lock dies with the process that held it)
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=retries)(_call_on_ray)
    cwd = os.getcwd()
    cap = workers if workers > 1 else max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_run, 1e-9)))

    sizes: dict[Any, int] = {}

    def submit(t: Task) -> Any:
        ref = task.remote(task_items(t, quiet=True), cwd, nproc)
        sizes[ref] = len(t.runs)
        return ref

    def wait_one(handles: list[Any]) -> list[tuple[Any, list[Result]]]:
        ready, _ = ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, ray.get(ref)))
            except Exception as e:  # noqa: BLE001
                out.append((ref, [failed_result(e)] * sizes[ref]))
        return out

    try:
        return schedule(plan, tasks, cap, submit, wait_one, log)
    finally:
        if started:
            ray.shutdown()


def _call_on_ray(items: list[tuple[str, dict[str, Any]]], cwd: str, nproc: int) -> list[Result]:
    """A Ray task: with ``nproc > 1`` its run trains as one process per GPU that Ray gave the task."""
    gpus = None
    if nproc > 1:
        import ray

        gpus = [str(g) for g in ray.get_gpu_ids()]
    return _call(items, cwd, nproc, gpus)


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
