"""Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and SIGTERM (to the main process, as
``kill`` or a scheduler sends it) of a running study with worker processes: the study ends with kdlab's one line
and exit status 130 / 143, its workers end quietly (no traceback, no resource_tracker warning) and are gone, and
the same command then continues the study.  From Python, run_study logs the same line and re-raises
KeyboardInterrupt."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from study_configs import study_cfg

STUDY_LINE = "the finished runs are kept and running the same study again continues it"


def _config(tmp_path: Path) -> Path:
    """One teacher that trains for a while, the student alone (done in seconds) and a KD student that waits for
    the teacher: when the signal comes one worker trains the teacher and the other is idle."""
    cfg = study_cfg(tmp_path / "study", seeds=(0,))
    cfg["teacher"]["methods"] = {"standard": "standard"}
    cfg["teacher"]["train"]["epochs"] = 20
    cfg["student"]["methods"] = {"alone": "none", "kd": "kd"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(tmp_path: Path, argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # a terminal's foreground job takes Ctrl-C even when these tests run in a background job (`cmd &` in a script
    # starts with SIGINT ignored, which Python and its children would keep)
    return subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group, as a shell job has
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_until_training(proc: subprocess.Popen, out: Path, timeout: float = 240) -> None:
    """Until the teacher has logged an epoch and the student alone has finished (its worker is idle then):
    checksums.json is the last file a finishing run writes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the study ended before it was signalled:\n{proc.communicate()[1]}")
        alone = list(out.glob("students/*/alone/seed0/checksums.json"))
        teacher = list(out.glob("teachers/*/standard/seed0/metrics.jsonl"))
        if alone and teacher and teacher[0].read_text().strip():
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the study did not start training in time")


def _alive_in_group(pgid: int) -> list[str]:
    """The processes of process group ``pgid`` that still run (a zombie has ended: this container's init may not
    reap the orphans it adopts)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(f"{entry.name} {fields[0]} {cmdline}")
    return alive


def _stop(proc: subprocess.Popen, how: str) -> tuple[int, str, str]:
    if how == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches every process of the foreground job
    else:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running 120 s after {how}:\n{proc.communicate()[1]}")
    deadline = time.monotonic() + 10
    while _alive_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _alive_in_group(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"processes left after {how}: {left}\n{err}"
    return proc.returncode, out, err


def _quiet(err: str) -> None:
    assert "Traceback" not in err and "leaked semaphore" not in err and "resource_tracker" not in err, err


@pytest.mark.parametrize("how, code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signalled_study_with_workers_ends_in_one_line_and_continues(tmp_path, how, code, word):
    config = _config(tmp_path)
    argv = [sys.executable, "-m", "kdlab", "study", str(config), "--workers", "2"]
    proc = _start(tmp_path, argv)
    _wait_until_training(proc, tmp_path / "study")
    rc, _, err = _stop(proc, how)
    assert rc == code, err
    _quiet(err)
    assert err.strip().splitlines()[-1] == f"kdlab: {word}; {STUDY_LINE}", err
    again = subprocess.run(argv, cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    reused = re.search(r"(\d+) reused, 0 failed", again.stderr)
    assert reused and int(reused.group(1)) >= 1, again.stderr  # the finished student alone is kept


def test_ctrl_c_of_run_study_from_python_logs_one_line_and_reraises(tmp_path):
    config = _config(tmp_path)
    script = tmp_path / "script.py"
    script.write_text(
        "from kdlab.analysis.study_command import run_study\n"
        "try:\n"
        f"    run_study({str(config)!r}, workers=2)\n"
        "except KeyboardInterrupt:\n"
        "    print('caught KeyboardInterrupt')\n")
    proc = _start(tmp_path, [sys.executable, str(script)])
    _wait_until_training(proc, tmp_path / "study")
    rc, out, err = _stop(proc, "SIGINT")
    assert rc == 0 and out.strip() == "caught KeyboardInterrupt", (out, err)
    _quiet(err)
    assert err.strip().splitlines()[-1] == f"kdlab: interrupted; {STUDY_LINE}", err
