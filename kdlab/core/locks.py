"""One process at a time per run folder: two studies sharing an output folder never train the same run twice."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from kdlab.core import log


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``<parent>/.<name>.lock``: an OS lock (``flock`` on POSIX, ``msvcrt`` on
    Windows), released when the process dies, so a killed run never leaves its folder locked."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    # thread_local=False: a lock taken by one thread (a study's scheduler) is held for the whole process
    # no soft (file-existence) fallback: a killed process would leave such a lock held for ever
    lock = FileLock(run_dir.parent / f".{run_dir.name}.lock", thread_local=False, fallback_to_soft=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            from kdlab.core.errors import RunFolderError

            raise RunFolderError(f"{run_dir} is being trained by another process") from None
        log.info(f"kdlab: waiting for {run_dir}: another process is training it")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
