"""A torchrun worker ends with its launcher, SIGKILL of the launcher included.

torchrun's elastic agent starts each worker in a session of its own and stops the workers itself when it ends in
an orderly way (a signal it handles, a failed worker).  Killed with SIGKILL it cannot: its workers are orphaned.
Killed during start-up they wait in the constructor of a TCPStore client, retrying to connect to the store the
agent served, until the process group's timeout (30 minutes); killed later they train on and write checkpoints.
A Python signal handler never runs while the worker sits in C++ code, and a polling thread only if that code let
go of the interpreter's lock.  So on Linux a worker asks the kernel to kill it when its parent dies
(``PR_SET_PDEATHSIG``), which works whatever the worker is doing; elsewhere a thread polls the parent.

torchrun's agent forks its workers from its main thread (``torch.distributed.elastic``'s ``PContext.start`` runs
in ``launch_agent``, on the main thread), so the death signal comes when the agent process ends, not when some
thread of it does.

Only processes started by torchrun are tied (``TORCHELASTIC_RUN_ID`` in the environment, set by torchrun's agent
for each worker); nothing happens in a plain run.  A launcher that is already gone when the tie is made (killed
while the worker's interpreter was starting) is noticed when the worker's parent is init (pid 1) and init is no
launcher; under a child-subreaper other than init such a worker is not noticed here and ends with the process
group's timeout.
The processes of kdlab's own launcher (:mod:`kdlab.core.processes`) are tied with :func:`tie_to_parent`, which
is given the launcher's pid: one already gone is noticed whatever the process's new parent.
Nothing is lost with a killed worker: checkpoints are written to a temporary file and renamed, and the run lock
is a ``flock`` the kernel releases.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SIGKILL = 9
EXIT_LAUNCHER_GONE = 1

_tied = False


def under_torchrun() -> bool:
    """Whether this process is a worker started by torchrun's elastic agent."""
    return bool(os.environ.get("TORCHELASTIC_RUN_ID"))


def tie_to_launcher(poll_every: float = 0.5) -> bool:
    """End this process when its torchrun launcher ends; returns whether it is tied (False when not a torchrun
    worker).  Call it as early as possible, from the main thread (the kernel forgets a thread's death signal when
    that thread ends).  Exits at once (status 1) when the launcher is already gone.  Calling it again does
    nothing."""
    global _tied
    if _tied or not under_torchrun():
        return _tied
    parent = os.getppid()
    gone = parent == 1 and not _init_is_a_launcher()  # the launcher died while this interpreter started
    if not gone and not _kill_me_with_parent():
        # no death signal: a thread polls (a worker blocked in C++ code that holds the interpreter waits for it)
        threading.Thread(target=_poll, args=(parent, poll_every), name="kdlab-launcher-watch", daemon=True).start()
    _tied = True
    if gone or os.getppid() != parent:  # gone before the death signal was asked for
        _launcher_gone()
    return True


def tie_to_parent(parent: int, poll_every: float = 0.5) -> None:
    """End this process when ``parent``, the process that started it, ends (SIGKILL of it included): how kdlab's
    own launcher (:mod:`kdlab.core.processes`) ties the processes it starts.  Call it from the main thread, first
    thing; exits at once (status 1) when ``parent`` is gone already."""
    if not _kill_me_with_parent():
        threading.Thread(target=_poll, args=(parent, poll_every, "kdlab"), name="kdlab-launcher-watch",
                         daemon=True).start()
    if os.getppid() != parent:
        _launcher_gone("kdlab")


def _init_is_a_launcher() -> bool:
    """Whether init (pid 1) may be this worker's launcher: torchrun itself (``docker run image torchrun ...``)
    or a Python program (``elastic_launch``) running this worker's interpreter."""
    try:
        args = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:  # no /proc (macOS: init is launchd)
        return False
    if any(b"torchrun" in a or b"torch.distributed." in a for a in args):
        return True
    try:
        return os.path.realpath("/proc/1/exe") == os.path.realpath(sys.executable)
    except OSError:
        return False


def _kill_me_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when the thread that forked it ends (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # no prctl in this C library
        return False


def _poll(parent: int, every: float, launcher: str = "torchrun") -> None:
    while os.getppid() == parent:
        time.sleep(every)
    _launcher_gone(launcher)


def _launcher_gone(launcher: str = "torchrun") -> None:
    with contextlib.suppress(OSError):  # a raw write: no lock may be taken here, and the reader may be gone
        os.write(2, f"kdlab: process {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}: "
                    f"stopped: its launcher ({launcher}) is gone\n".encode())
    os._exit(EXIT_LAUNCHER_GONE)
