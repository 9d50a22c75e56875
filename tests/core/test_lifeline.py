"""A torchrun worker is tied to its launcher: it ends when the launcher ends, SIGKILL included, even while blocked
in C code that holds the interpreter; one whose launcher is already gone stops at once; a plain process is not
tied."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdlab.core import lifeline

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the death signal is Linux's")

# the launcher starts the worker and waits; the worker ties itself, says so, then blocks
LAUNCHER = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1]], start_new_session=True)
print(worker.pid, flush=True)
time.sleep(300)
"""
WORKER = """
import ctypes, time
from kdlab.core import lifeline
if {poll}:
    lifeline._kill_me_with_parent = lambda: False  # as where there is no prctl
assert lifeline.tie_to_launcher(poll_every=0.1)
print("tied", flush=True)
if {poll}:
    while True:
        time.sleep(1)
ctypes.PyDLL(None).pause()  # C code holding the interpreter's lock: no Python thread or handler runs
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@linux_only
@pytest.mark.parametrize("poll", [False, True], ids=["death-signal", "polling"])
def test_a_worker_ends_when_its_launcher_is_killed(poll):
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test", "PYTHONPATH": os.pathsep.join(sys.path)}
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, WORKER.format(poll=poll)], env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    worker = None
    try:
        worker = int(launcher.stdout.readline())
        assert launcher.stdout.readline().strip() == "tied"
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        end = time.monotonic() + 10
        while _running(worker) and time.monotonic() < end:
            time.sleep(0.02)
        assert not _running(worker), "the worker outlived its launcher by 10 s"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        if worker is not None and _running(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.fixture
def torchrun_worker(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(lifeline, "_tied", False)
    monkeypatch.setattr(lifeline, "_kill_me_with_parent", lambda: True)  # not on the test process itself

    def exit_(code):
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_)


def test_a_worker_whose_launcher_is_gone_already_stops_at_once(torchrun_worker, monkeypatch, capfd):
    monkeypatch.setattr(os, "getppid", lambda: 1)  # orphaned while its interpreter started
    monkeypatch.setattr(lifeline, "_init_is_a_launcher", lambda: False)
    with pytest.raises(SystemExit) as stop:
        lifeline.tie_to_launcher()
    assert stop.value.code == lifeline.EXIT_LAUNCHER_GONE
    assert capfd.readouterr().err == "kdlab: process 1 of 2: stopped: its launcher (torchrun) is gone\n"


def test_torchrun_as_init_is_a_live_launcher(torchrun_worker, monkeypatch):
    monkeypatch.setattr(os, "getppid", lambda: 1)  # docker run image torchrun ...
    monkeypatch.setattr(lifeline, "_init_is_a_launcher", lambda: True)
    assert lifeline.tie_to_launcher() is True
    assert lifeline.tie_to_launcher() is True  # once is enough


def test_a_plain_process_is_not_tied(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setattr(lifeline, "_tied", False)
    monkeypatch.setattr(lifeline, "_kill_me_with_parent", lambda: pytest.fail("a plain process asked to be tied"))
    assert lifeline.tie_to_launcher() is False
