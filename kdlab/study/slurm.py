"""``--launcher slurm``: a study's runs as Slurm jobs, submitted with submitit from a login node.

* One job per task (a run, or a group of students of one teacher), in plan order (a task whose runs have all
  finished is reused without a job); a job that needs runs of
  other jobs (a student its teacher) is submitted at once with ``--dependency=afterok:<their jobs>`` and Slurm
  starts it when they have succeeded (a failed teacher's students are cancelled by Slurm and reported as
  skipped).  ``--max-parallel K``: at most K jobs in the queue (pending or running) at a time.
* Requeue: a job that reaches its time limit gets SIGUSR2 first (submitit's ``--signal``), is requeued and
  resumes; a job requeued by the cluster (preemption, ``scontrol requeue``) starts again as well.  Runs are
  checkpointed every epoch, and a restarted job resumes each run from its last checkpoint: the epoch under way
  when the job stopped is trained again, and the run ends bit-identical to an uninterrupted one.
* Several GPUs per run: ``--gpus-per-run G`` asks for G tasks of one GPU each on one node, and the run trains as
  one DDP job of G processes (each task gets torchrun's environment from submitit).
* Logs: ``<study>/slurm/<job id>_*`` (the job's stdout, stderr and submission); ``<study>/slurm/jobs.json`` keeps
  each task's job id, so that running the study again while its jobs are in the queue follows them instead of
  submitting them twice.
* Ctrl-C cancels the jobs this command submitted; a driver that dies otherwise (the login session ends) leaves
  them running, and running the same command again follows them.

The compute nodes must see the study folder, the data and this Python environment at the same paths (a shared
file system), as for every Slurm job.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlab.core.checkpoint import atomic_write_text
from kdlab.core.errors import ConfigError, KdlabError
from kdlab.runs.folder import RunFolder
from kdlab.study.execute import Outcome, Result, Task, run_label, run_task, schedule, task_items
from kdlab.study.plan import PlannedRun

JOB_STATES_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                    "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"}
POLL_SECONDS = 5.0
REQUEUES = 50  # how often a job may reach its time limit and be requeued


@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks Slurm for (``kdlab study --launcher slurm`` options)."""

    partition: str | None = None
    time: str = "24:00:00"  # HH:MM:SS, MM:SS, D-HH:MM:SS or minutes
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    account: str | None = None
    qos: str | None = None
    max_parallel: int | None = None
    folder: str | None = None  # default: <study>/slurm
    mem_gb: float | None = None
    cluster: str = "slurm"  # submitit's cluster: slurm, or local (submitit's local executor, for tests)
    processes_per_run: int | None = None  # default: max(1, gpus_per_run); on CPU nodes, a DDP run of N processes
    signal_delay_s: int = 90  # the time-limit signal comes this long before the limit

    @classmethod
    def of(cls, options: dict[str, Any], gpus_per_run: float | None = None) -> SlurmOptions:
        """The options of ``kdlab study --launcher slurm`` (a :class:`ConfigError` naming a bad one)."""
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"slurm options: unknown {', '.join(sorted(unknown))}")
        options = {k: v for k, v in options.items() if v is not None}
        if gpus_per_run is not None:
            g = float(gpus_per_run)
            if not g.is_integer() or g < 0:
                raise ConfigError(f"--gpus-per-run: a Slurm job takes a whole number of GPUs, got {gpus_per_run}")
            options["gpus_per_run"] = int(g)
        out = cls(**options)
        out.minutes()
        for name in ("cpus_per_run", "max_parallel", "processes_per_run"):
            v = getattr(out, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"--{name.replace('_', '-')}: a whole number >= 1, got {v!r}")
        if out.cluster not in ("slurm", "local"):
            raise ConfigError(f"slurm options: cluster is slurm or local, got {out.cluster!r}")
        return out

    @property
    def tasks(self) -> int:
        return self.processes_per_run or max(1, self.gpus_per_run)

    def minutes(self) -> int:
        return time_minutes(self.time)


def time_minutes(text: str) -> int:
    """Slurm's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) in whole
    minutes, rounded up (at least 1)."""
    return max(1, -(-time_seconds(text) // 60))


def time_seconds(text: str) -> int:
    """Slurm's time formats in seconds."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--time: expected HH:MM:SS, MM:SS, D-HH:MM:SS or minutes, got {text!r}")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        return ((int(days) * 24 + int(a)) * 60 + int(b or 0)) * 60 + int(c or 0)
    if c is not None:  # HH:MM:SS
        return (int(a) * 60 + int(b)) * 60 + int(c)
    if b is not None:  # MM:SS
        return int(a) * 60 + int(b)
    return int(a) * 60


class SlurmTask:
    """What a job runs: one task's runs, resumed from their checkpoints (so a requeued job goes on where it
    stopped).  submitit calls :meth:`checkpoint` at the time-limit signal and requeues the job with it."""

    def __init__(self, items: list[tuple[str, dict[str, Any]]], cwd: str):
        self.items, self.cwd = items, cwd

    def __call__(self) -> list[Result]:
        os.chdir(self.cwd)  # relative paths (runs, data roots) mean what they meant on the login node
        import submitit
        import torch

        cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if cpus.isdigit():  # the job's CPUs, not the node's (jobs share a node; not every cluster confines them)
            torch.set_num_threads(int(cpus))

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one DDP run: torchrun's variables for kdlab.core.distributed
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return run_task(self.items)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _executor(options: SlurmOptions, folder: Path, name: str) -> tuple[Any, dict[str, str]]:
    """submitit's executor for the study's jobs, and the extra ``sbatch`` options every job gets."""
    try:
        import submitit
    except ImportError:
        raise KdlabError("--launcher slurm needs submitit: pip install 'submitit>=1.5'") from None
    # a long run may reach its time limit many times, each time requeued and resumed (submitit's default: 3)
    extra: dict[str, str] = {}
    if options.cluster == "local":  # the same jobs as processes here; its time limit to the second (tests)
        ex = submitit.LocalExecutor(folder=str(folder), max_num_timeout=REQUEUES)
        ex.update_parameters(timeout_min=time_seconds(options.time) / 60, tasks_per_node=options.tasks,
                             gpus_per_node=options.gpus_per_run, signal_delay_s=options.signal_delay_s)
        return ex, extra
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=REQUEUES)
    params: dict[str, Any] = {"timeout_min": options.minutes(), "nodes": 1, "tasks_per_node": options.tasks,
                              "cpus_per_task": options.cpus_per_run, "name": name, "mem_gb": options.mem_gb,
                              "gpus_per_node": options.gpus_per_run or None, "slurm_partition": options.partition,
                              "slurm_signal_delay_s": options.signal_delay_s}
    if options.account:
        extra["account"] = options.account
    if options.qos:
        extra["qos"] = options.qos
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex, extra


def run_on_slurm(plan: list[PlannedRun], tasks: list[Task], log: Callable[[str], None], options: SlurmOptions,
                 study_dir: Path, name: str = "kdlab") -> list[Outcome]:
    """The study's tasks as Slurm jobs (see the module's docstring); returns every run's outcome."""
    folder = Path(options.folder) if options.folder else study_dir / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    executor, extra = _executor(options, folder, name)
    record = JobRecord(folder / "jobs.json")
    cwd = os.getcwd()
    size: dict[Any, int] = {}
    needed: dict[Any, list[Any]] = {}  # a job's unfinished needs when it was submitted
    mine: list[Any] = []  # the jobs this command submitted (cancelled on Ctrl-C)
    failures: list[str] = []

    def submit(task: Task, needs: list[Any] = ()) -> Any:
        key = str(task.runs[0].run_dir)
        if not needs and all(RunFolder(r.run_dir).is_finished() for r in task.runs):
            done = Reused(run_task(task_items(task, quiet=True)))  # no job to wait in the queue for
            size[done], needed[done] = len(task.runs), []
            return done
        job = record.alive(key, executor.folder, options.tasks) if options.cluster == "slurm" else None
        if job is not None:
            log(f"slurm: job {job.job_id} ({_what(task)}) is in the queue already: following it")
        else:
            deps = [j.job_id for j in needs if not _succeeded(j)]
            if options.cluster == "slurm":
                # cancelled, not pending for ever, when a job it needs failed
                after = {"kill-on-invalid-dep": "yes"} if deps else {}
                executor.update_parameters(slurm_dependency="afterok:" + ":".join(deps) if deps else None,
                                           slurm_additional_parameters={**extra, **after})
            elif deps:  # the local executor has no dependencies: the schedule waits for them
                raise AssertionError("needs of a local-executor job must have finished")
            job = executor.submit(SlurmTask(task_items(task, quiet=True), cwd))
            mine.append(job)
            record.add(key, job.job_id)
            log(f"slurm: job {job.job_id} queued: {_what(task)}" + (f" (after job {', '.join(deps)})" if deps else ""))
        size[job] = len(task.runs)
        needed[job] = list(needs)
        return job

    def wait_one(jobs: list[Any]) -> list[tuple[Any, list[Result]]]:
        while True:
            done = [j for j in jobs if j.done()]
            if done:
                return [(j, _results(j, size[j], needed[j], failures)) for j in done]
            time.sleep(POLL_SECONDS if options.cluster == "slurm" else 0.5)

    try:
        outcomes = schedule(plan, tasks, options.max_parallel or len(tasks) or 1, submit, wait_one, log,
                            early=options.cluster == "slurm")
    except KeyboardInterrupt:
        live = [j for j in mine if not j.done()]
        for j in live:
            j.cancel(check=False)
        if live:
            log(f"slurm: cancelled {len(live)} job(s) of this study: {', '.join(j.job_id for j in live)}")
        raise
    if failures:
        log(f"slurm: {len(failures)} job(s) failed (logs in {folder}):")
        for line in failures:
            log(f"  {line}")
    return outcomes


def _what(task: Task) -> str:
    first = run_label(task.runs[0])
    return first if len(task.runs) == 1 else f"{first} and {len(task.runs) - 1} more of its group"


def _succeeded(job: Any) -> bool:
    try:
        return job.done() and job.state in ("COMPLETED", "FINISHED")
    except Exception:  # noqa: BLE001
        return False


def _results(job: Any, n: int, needs: list[Any], failures: list[str]) -> list[Result]:
    """The job's runs' results (rank 0's in a DDP job), or each run failed with the job's reason (``needs``: the
    jobs it depended on; Slurm cancels it when one of them failed)."""
    try:
        out = job.results()[0]
        if isinstance(out, list) and len(out) == n:
            return out
        reason = f"the job returned {out!r}"
    except Exception as e:  # noqa: BLE001 - the job failed, was cancelled, or ran out of time for good
        state = _state(job)
        if state == "CANCELLED" and any(not _succeeded(j) for j in needs):
            return [(None, False, "skipped: a run it needs failed (Slurm cancelled its job)")] * n
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        reason = f"{state or 'failed'}: {first[:300]}"
    failures.append(f"job {job.job_id}: {reason}; stderr: {job.paths.stderr}")
    return [(None, False, f"slurm job {job.job_id} {reason}")] * n


def _state(job: Any) -> str:
    try:
        return str(job.state).split()[0]
    except Exception:  # noqa: BLE001
        return ""


class Reused:
    """A task whose runs had all finished: reused here, as a finished job stands in the schedule."""

    job_id, state = "-", "COMPLETED"

    def __init__(self, results: list[Result]):
        self._results = results

    def done(self) -> bool:
        return True

    def results(self) -> list[list[Result]]:
        return [self._results]


class JobRecord:
    """``jobs.json``: task (its first run folder) -> Slurm job id, to follow jobs a previous driver submitted."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.jobs: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.jobs = {}

    def add(self, key: str, job_id: str) -> None:
        self.jobs[key] = job_id
        atomic_write_text(self.path, json.dumps(self.jobs, indent=1, sort_keys=True) + "\n")

    def alive(self, key: str, folder: Path, ntasks: int) -> Any:
        """The recorded job of ``key`` when it is still in the queue (pending, running, requeued), else None."""
        job_id = self.jobs.get(key)
        if job_id is None or _queue_state(job_id) not in JOB_STATES_ALIVE:
            return None
        import submitit

        return submitit.SlurmJob(folder=folder, job_id=job_id, tasks=tuple(range(ntasks)))


def _queue_state(job_id: str) -> str:
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


__all__ = ["SlurmOptions", "SlurmTask", "run_on_slurm", "time_minutes", "time_seconds"]
