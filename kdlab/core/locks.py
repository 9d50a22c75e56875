"""One process at a time per run folder: two studies sharing an output folder never train the same run twice.

Two kinds of lock, chosen per folder by ``KDLAB_LOCK`` (``auto``, the default; ``flock``; ``lease``):

* ``flock``: an OS lock on ``<parent>/.<name>.lock`` (``flock`` on POSIX, ``msvcrt`` on Windows), released when
  the process dies, so a killed run never leaves its folder locked.  On NFS mounted without locking (``nolock``,
  common on clusters) it locks nothing;
* ``lease``: ``<parent>/.<name>.lease``, created with ``O_EXCL`` (atomic on NFSv3 and later) and holding the
  holder's host, pid and a token; a thread rewrites it every :data:`HEARTBEAT` seconds.  A lease not renewed for
  :data:`STALE` seconds is taken as left by a dead process (on any host) and broken, with a log line.
  ``auto`` uses a lease on network file systems (NFS, CIFS/SMB, Lustre, GPFS, BeeGFS, CephFS; from
  ``/proc/mounts``) and ``flock`` elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from kdlab.core import log

HEARTBEAT = 10.0  # seconds between a lease's renewals
STALE = 120.0  # a lease not renewed for this long was left by a dead process
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "fuse.ceph", "afs"}
MODES = ("auto", "flock", "lease")


def lock_mode(folder: Path, mounts: str | None = None) -> str:
    """``KDLAB_LOCK`` (auto: ``lease`` when ``folder`` is on a network file system of ``mounts``, the text of
    /proc/mounts, else ``flock``)."""
    mode = os.environ.get("KDLAB_LOCK", "auto")
    if mode not in MODES:
        from kdlab.core.errors import ConfigError

        raise ConfigError(f"KDLAB_LOCK: {mode!r} is not one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "lease" if _fs_type(folder, mounts) in NETWORK_FS else "flock"


def _fs_type(folder: Path, mounts: str | None) -> str | None:
    """The type of the file system holding ``folder``: the longest mount point above it in /proc/mounts."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    path, best = str(Path(folder).resolve()), (None, -1)
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best[1]:
            best = (parts[2], len(point))
    return best[0]


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """Hold the run folder's lock (:func:`lock_mode`); ``wait=False``: a RunFolderError when another process
    holds it, else wait for it."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if lock_mode(run_dir.parent) == "lease":
        with Lease(run_dir.parent / f".{run_dir.name}.lease", run_dir).held(wait):
            yield
        return
    # thread_local=False: a lock taken by one thread (a study's scheduler) is held for the whole process
    # no soft (file-existence) fallback: a killed process would leave such a lock held for ever
    lock = FileLock(run_dir.parent / f".{run_dir.name}.lock", thread_local=False, fallback_to_soft=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            _busy(run_dir)
        log.info(f"kdlab: waiting for {run_dir}: another process is training it")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _busy(run_dir: Path, holder: str = "") -> None:
    from kdlab.core.errors import RunFolderError

    raise RunFolderError(f"{run_dir} is being trained by another process{holder}") from None


class Lease:
    """A lock file that holds on file systems without working ``flock``: created exclusively, renewed by a
    heartbeat thread, broken when stale (its holder died), removed on release if it is still ours."""

    def __init__(self, path: Path, run_dir: Path, heartbeat: float = HEARTBEAT, stale: float = STALE):
        self.path, self.run_dir, self.heartbeat, self.stale = path, run_dir, heartbeat, stale
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()

    def _body(self) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token})

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def try_acquire(self) -> bool:
        """Create the lease (breaking a stale one first); False when another process holds it."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self._body())
            return True
        return False

    def _break_if_stale(self) -> bool:
        """Remove the lease if its holder stopped renewing it (True: it is gone, by us or meanwhile)."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if age < self.stale:
            return False
        grave = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.rename(self.path, grave)  # atomic: of two processes breaking it, one succeeds
        except FileNotFoundError:
            return True
        who = self.holder_text(json.loads(grave.read_text() or "{}") if grave.exists() else None)
        grave.unlink(missing_ok=True)
        log.info(f"kdlab: {self.run_dir}: broke a lock not renewed for {age:.0f} s{who}: its process is gone")
        return True

    @staticmethod
    def holder_text(h: dict | None) -> str:
        return f" (host {h.get('host')}, pid {h.get('pid')})" if h else ""

    def _renew(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                if (self.holder() or {}).get("token") == self.token:
                    os.utime(self.path)

    @contextlib.contextmanager
    def held(self, wait: bool = True) -> Iterator[None]:
        said = False
        while not self.try_acquire():
            if not wait:
                _busy(self.run_dir, self.holder_text(self.holder()))
            if not said:
                log.info(f"kdlab: waiting for {self.run_dir}: another process is training it"
                         f"{self.holder_text(self.holder())}")
                said = True
            time.sleep(min(1.0, self.heartbeat))
        beat = threading.Thread(target=self._renew, name="kdlab-lease", daemon=True)
        beat.start()
        try:
            yield
        finally:
            self._stop.set()
            beat.join()
            if (self.holder() or {}).get("token") == self.token:
                self.path.unlink(missing_ok=True)
