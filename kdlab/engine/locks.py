"""One process at a time per run folder: two studies sharing an output folder never train the same run twice."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<parent>/.<name>.lock`` (released when the process dies)."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f".{run_dir.name}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                from ..errors import RunFolderError

                raise RunFolderError(f"{run_dir} is being trained by another process") from None
            print(f"kdlab: waiting for {run_dir}: another process is training it", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
