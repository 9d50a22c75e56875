"""Killing a ``--workers N`` study ends its workers (and the resource tracker) too: nothing is orphaned."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_DATA

SCRIPT = """
import sys
from kdlab.analysis.study_command import run_study

run_study({"name": "orphans", "out_dir": sys.argv[1], "seeds": [0, 1], "data": %r,
           "teacher": {"model": "resnet8", "methods": {"standard": "standard"},
                       "train": {"epochs": 500, "batch_size": 32, "progress": "off"}},
           "student": {"model": "resnet8", "methods": {"alone": "none"},
                       "train": {"epochs": 500, "batch_size": 32, "progress": "off"}}}, workers=2)
""".replace("%r", repr(TINY_DATA))


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_a_study_ends_its_workers(tmp_path, sig):
    (tmp_path / "study.py").write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, "study.py", str(tmp_path / "s")], cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    kids: set[int] = set()
    while time.time() < deadline and len(kids) < 3:  # 2 workers + the resource tracker
        time.sleep(0.5)
        kids = _children(proc.pid)
    assert len(kids) >= 3, kids
    time.sleep(2)  # the workers are training
    proc.send_signal(sig)
    proc.wait(30)
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.5)
    left = [k for k in kids if _alive(k)]
    for k in left:
        os.kill(k, signal.SIGKILL)
    assert not left, f"{len(left)} of {len(kids)} child processes outlived the study"
