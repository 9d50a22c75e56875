"""``kdlab tune`` as processes: SIGKILLed in the middle of a trial, the same command then finishes the search with
the planned number of complete trials (the killed trial continued from its checkpoint, none lost or run twice);
two processes given the same folder share one search.

Slow (each starts kdlab processes): ``pytest -m slow tests/e2e/test_tune_processes.py``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from kdlab.analysis.tune_storage import RUN_DIR, WORKER, open_storage
from kdlab.runs.folder import RunFolder
from processes import SLOW_NET, descendants, kill_all, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")]

BASE = {"seed": 0, "data": {"name": "digits", "val_fraction": 0.1},
        "model": {"name": "module", "target": "slow:Net", "stages": ["body.2"]},
        "optim": {"lr": 0.05}, "schedule": {"name": "constant"},
        "train": {"epochs": 3, "batch_size": 64, "progress": "off", "tensorboard": False}}
SEARCH = ["--search", "optim.lr=float:0.01:0.5:log", "--pruner", "none", "--out", "tune"]


def _start(folder: Path, args: list[str], slow_step: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "SLOW_STEP"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    if slow_step:
        env["SLOW_STEP"] = slow_step
    return subprocess.Popen([sys.executable, "-m", "kdlab", "tune", "base.yaml", *SEARCH, *args], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _setup(folder: Path) -> None:
    (folder / "slow.py").write_text(SLOW_NET)
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE))


def _rows(folder: Path) -> list[dict]:
    with open(folder / "tune" / "trials.csv") as f:
        return list(csv.DictReader(f))


def _metrics(run_dir: Path) -> list[str]:
    return RunFolder(run_dir).metrics_file.read_text().splitlines()


def test_a_search_killed_mid_trial_finishes_with_the_planned_trials(tmp_path):
    _setup(tmp_path)
    proc = _start(tmp_path, ["--trials", "3"], slow_step="0.03")
    tree = {proc.pid: 0}
    killed_run = tmp_path / "tune" / "trials" / "trial-001"
    try:
        # trial 1 has checkpointed its first epoch, and is training its second
        assert wait_for(lambda: RunFolder(killed_run).checkpoint("last").is_file() or proc.poll() is not None, 240)
        assert proc.poll() is None, proc.communicate()[1]
        tree = {**descendants(proc.pid), proc.pid: 0}
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        kill_all(tree)
    before = _metrics(killed_run)
    assert 1 <= len(before) < 3 and not RunFolder(killed_run).is_finished()
    again = _start(tmp_path, ["--trials", "3"], slow_step=None)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "tune: trial 1 was interrupted" in err and out.startswith("best: trial ")
    rows = _rows(tmp_path)
    complete = [r for r in rows if r["state"] == "complete"]
    assert len(complete) == 3 and [r["state"] for r in rows].count("interrupted") == 1
    # none doubled: trial 2 continued trial 1's folder, trial 3 is the third
    assert sorted(r["run_dir"] for r in complete) == [f"trials/trial-00{i}" for i in (0, 1, 3)]
    cont = next(r for r in rows if r["note"] == "continues trial 1")
    assert cont["run_dir"] == "trials/trial-001" and cont["optim.lr"] == rows[1]["optim.lr"]
    after = _metrics(killed_run)
    # the killed trial's run resumed from its checkpoint: its first epoch is the record written before the kill
    # (its train_time measured then, with SLOW_STEP: a run trained anew would log another)
    assert len(after) == 3 and after[0] == before[0]
    for r in complete:
        summary = json.loads(RunFolder(tmp_path / "tune" / r["run_dir"]).summary_file.read_text())
        assert float(r["value"]) == pytest.approx(summary["val_top1"])


def test_two_processes_share_one_search(tmp_path):
    _setup(tmp_path)
    procs = [_start(tmp_path, ["--trials", "4"], slow_step="0.02") for _ in range(2)]
    try:
        results = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            kill_all({p.pid: 0, **descendants(p.pid)})
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in results]
    study = optuna.load_study(study_name="tune", storage=open_storage(None, tmp_path / "tune"))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs[RUN_DIR] for t in trials}) == 4
    assert len({t.user_attrs[WORKER] for t in trials}) == 2  # each process took trials
    for t in trials:
        assert RunFolder(t.user_attrs[RUN_DIR] if Path(t.user_attrs[RUN_DIR]).is_absolute()
                         else tmp_path / t.user_attrs[RUN_DIR]).is_finished()
