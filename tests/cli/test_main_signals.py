"""SIGTERM and Ctrl-C under the kdlab command: one line, exit status 143 / 130, SIGTERM's default put back."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.fast

# a subcommand replaced by one that gets a signal (in a process of its own: a SIGTERM nobody handles ends it)
SCRIPT = """
import importlib, os, signal, sys, time
m = importlib.import_module("kdlab.cli.main")

def sigterm(a):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    print("not stopped")

def reported_interrupt(a):
    from kdlab.core.errors import mark_reported
    e = KeyboardInterrupt()
    mark_reported(e)  # as run_study does once it has logged its line
    raise e

m.cmd_list = {"sigterm": sigterm, "reported": reported_interrupt}[sys.argv[1]]
code = m.main(["list"])
print(code, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
"""


def _run(case: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", SCRIPT, case], env=env, capture_output=True, text=True, timeout=60)


def test_sigterm_unwinds_into_one_line_and_exit_status_143():
    r = _run("sigterm")
    assert r.returncode == 0 and r.stdout.split() == ["143", "True"], (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip() == ("kdlab: terminated; finished epochs are checkpointed: rerun with --resume (study "
                                "and quickstart resume by themselves)")


def test_an_interrupt_a_study_has_reported_is_not_reported_twice():
    r = _run("reported")
    assert r.returncode == 0 and r.stdout.split() == ["130", "True"], (r.returncode, r.stdout, r.stderr)
    assert r.stderr == ""
