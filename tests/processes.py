"""The process table, read from /proc: a process's parent and state, everything a process started, and which of
those still run (a pid's start time tells it apart from a later process given the same pid); and a model that is
slow to train while SLOW_STEP is set, so that a job is still training when a test kills it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root``: pid -> start time."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (s := stat(int(entry.name))) is not None:
            table[int(entry.name)] = s
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, start) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def alive(pids: dict[int, int]) -> list[int]:
    return [pid for pid, start in pids.items()
            if (s := stat(pid)) is not None and s[1] not in "ZX" and s[2] == start]


def kill_all(pids: dict[int, int]) -> None:
    for pid in alive(pids):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wait_for(what, timeout: float, every: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if found := what():
            return found
        time.sleep(every)
    return None


# a user model (``model: {name: module, target: slow:Net, stages: [body.2]}`` with this written to slow.py): sleeps
# SLOW_STEP seconds in each training step while SLOW_STEP is set, so a killed run is still training when the kill
# comes and the run that resumes it (without it) is quick
SLOW_NET = """
import os
import time
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        if self.training and os.environ.get("SLOW_STEP"):
            time.sleep(float(os.environ["SLOW_STEP"]))
        return self.fc(self.body(x))
"""
