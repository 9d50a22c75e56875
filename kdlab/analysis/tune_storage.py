"""Where a search's trials are stored and which process runs each: Optuna's storage, the search's lock, and the
worker claims that tell a trial some live process is running from one whose process was killed.

Every worker process holds an OS lock (``flock``, released by the kernel when the process dies, even by SIGKILL)
on ``<out_dir>/.workers/<worker>.lock`` for as long as it searches, and writes its name into each trial it takes.
A trial Optuna still lists as running whose worker's lock is free was interrupted: :func:`recover_interrupted`
fails it and enqueues its parameters again, marked as continuing it, so the next trial taken continues its run
folder from its last checkpoint.  Taking a trial and this recovery happen under the search's lock
(``<out_dir>/.tune.lock``), so no worker ever sees another's trial between Optuna creating it and the claim.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kdlab.core.errors import ConfigError, KdlabError

JOURNAL = "study.journal"
WORKERS = ".workers"
SEARCH_LOCK = ".tune.lock"
# user attributes kdlab sets on a trial
WORKER, RUN_DIR, CONTINUES = "kdlab_worker", "kdlab_run_dir", "kdlab_continues"
INSTALL = "pip install 'kdlab[tune]' (or: pip install optuna)"


def import_optuna():
    """Optuna, an optional dependency: without it a one-line error says how to install it."""
    try:
        import optuna
    except ImportError:
        raise KdlabError(f"kdlab tune needs Optuna: {INSTALL}") from None
    return optuna


def _os_lock(path: Path) -> FileLock:
    # thread_local=False: held for the whole process; no soft (file-existence) fallback, which a kill leaves held
    return FileLock(path, thread_local=False, fallback_to_soft=False)


class _JournalLock:
    """The journal file's lock as an OS lock: Optuna's own file locks are files that a killed worker leaves
    behind (the others then wait out a 30 s grace period)."""

    def __init__(self, path: Path):
        self._lock = _os_lock(path)

    def acquire(self) -> bool:
        self._lock.acquire()
        return True

    def release(self) -> None:
        self._lock.release()


def open_storage(spec: str | None, out_dir: Path):
    """The Optuna storage: a journal file (default ``out_dir/study.journal``; any path that is not a URL) or an
    RDB URL such as ``sqlite:///tune.db``."""
    optuna = import_optuna()
    if spec is not None and "://" in spec:
        if spec.startswith("sqlite:///"):
            Path(spec[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            return optuna.storages.RDBStorage(spec)
        except ImportError:
            raise KdlabError(f"storage {spec}: an RDB storage needs SQLAlchemy (pip install sqlalchemy)") from None
        except Exception as e:  # noqa: BLE001 - a bad URL or an unreachable database: one line
            raise ConfigError(f"storage {spec}: {str(e).strip().splitlines()[0] if str(e).strip() else e}") \
                from None
    path = Path(spec).expanduser() if spec else out_dir / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from optuna.storages.journal import JournalFileBackend, JournalStorage
    except ImportError:  # Optuna 3
        from optuna.storages import JournalFileStorage as JournalFileBackend
        from optuna.storages import JournalStorage
    return JournalStorage(JournalFileBackend(str(path), lock_obj=_JournalLock(path.with_name(path.name + ".lock"))))


@contextlib.contextmanager
def search_lock(out_dir: Path) -> Iterator[None]:
    """The search's lock: taking a trial, recovering interrupted ones and writing the outputs."""
    lock = _os_lock(out_dir / SEARCH_LOCK)
    with lock:
        yield


class Worker:
    """This process's claim on the trials it runs (a context manager: the claim lasts while it is entered)."""

    def __init__(self, out_dir: Path):
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = out_dir / WORKERS / f"{self.name}.lock"
        self._lock = _os_lock(self.path)

    def __enter__(self) -> Worker:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire(timeout=0)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()
        self.path.unlink(missing_ok=True)


def worker_alive(out_dir: Path, name: str | None) -> bool:
    """Whether the worker ``name`` still holds its claim (a process that ended, however, holds none)."""
    if not name:
        return False
    path = out_dir / WORKERS / f"{name}.lock"
    if not path.exists():
        return False
    lock = _os_lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    path.unlink(missing_ok=True)
    return False


def recover_interrupted(study, out_dir: Path) -> list[Any]:
    """Fail each running trial whose worker is gone and enqueue its parameters again, to continue its run
    folder; returns the trials recovered.  Call under :func:`search_lock`."""
    optuna = import_optuna()
    found = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if worker_alive(out_dir, t.user_attrs.get(WORKER)):
            continue
        attrs = {CONTINUES: t.number}
        if t.user_attrs.get(RUN_DIR):
            attrs[RUN_DIR] = t.user_attrs[RUN_DIR]
        study.enqueue_trial(dict(t.params), user_attrs=attrs)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        found.append(t)
    return found


def continued_numbers(trials) -> set[int]:
    """The trials that a later trial continues (interrupted ones): they do not count toward the planned trials."""
    return {t.user_attrs[CONTINUES] for t in trials if CONTINUES in t.user_attrs}


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own log lines off while kdlab prints its own (restored afterwards)."""
    optuna = import_optuna()
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
