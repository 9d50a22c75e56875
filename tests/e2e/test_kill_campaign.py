"""A kill campaign: SIGKILL at random moments of a teacher run, a study training a group of students, a study with
``--workers 2``, and torchrun jobs (the launcher, or one of its ranks), each then run again until it finishes.
Every kill leaves no process behind (all that the killed job started are gone within GONE_WITHIN seconds), and
the finished results equal an uninterrupted run's: no silently wrong row.

Slow (kept out of CI: ``pytest -m slow tests/e2e/test_kill_campaign.py``); KILLS_PER_CASE (8) kills each of the
five cases, KILL_SEED draws the moments.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from free_port import free_port
from kdlab.core.checkpoint import load_weights
from kdlab.runs.summary import RunSummary
from processes import SLOW_NET, alive, descendants, kill_all, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")]

KILLS = int(os.environ.get("KILLS_PER_CASE", "8"))
GONE_WITHIN = 15.0
DATA = {"name": "mixed-feature", "num_train": 48, "num_test": 24}
MODEL = {"name": "module", "target": "slow:Net", "stages": ["body.2"]}
TRAIN = {"epochs": 6, "batch_size": 16, "progress": "off", "num_workers": 0}


def _teacher_cfg(out: Path) -> dict:
    return {"seed": 0, "out_dir": str(out), "data": DATA, "model": MODEL, "train": TRAIN}


def _study_cfg(out: Path, seeds: list[int]) -> dict:
    return {"name": "campaign", "out_dir": str(out), "seeds": seeds, "data": DATA, "group_size": 2,
            "teacher": {"model": MODEL, "methods": {"standard": "standard"}, "train": TRAIN},
            "student": {"model": MODEL, "methods": {"kd": "kd", "kd-t8": {"name": "kd", "T": 8.0}},
                        "train": TRAIN}}


CASES = {  # case -> (config, command after `kdlab`, what is killed)
    "teacher": (_teacher_cfg, ["train-teacher", "cfg.yaml"], "launcher"),
    "group": (lambda out: _study_cfg(out, [0]), ["study", "cfg.yaml"], "launcher"),
    "workers": (lambda out: _study_cfg(out, [0, 1]), ["study", "cfg.yaml", "--workers", "2"], "launcher"),
    "torchrun": (_teacher_cfg, ["train-teacher", "cfg.yaml"], "launcher"),
    "torchrun-rank": (_teacher_cfg, ["train-teacher", "cfg.yaml"], "rank"),
}


def _command(case: str, args: list[str]) -> list[str]:
    if case.startswith("torchrun"):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
                f"--master-port={free_port()}", "-m", "kdlab", *args]
    return [sys.executable, "-m", "kdlab", *args]


def _env(folder: Path, slow: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC_") and k != "SLOW_STEP"}
    env.update(PYTHONPATH=os.pathsep.join([str(folder), *sys.path]), OMP_NUM_THREADS="1")
    if slow:
        env["SLOW_STEP"] = "0.25"
    return env


def _prepare(folder: Path, case: str) -> list[str]:
    folder.mkdir(parents=True)
    (folder / "slow.py").write_text(SLOW_NET)
    make, args, _ = CASES[case]
    (folder / "cfg.yaml").write_text(yaml.safe_dump(make(folder / "out")))
    return args


def _kill_once(folder: Path, case: str, args: list[str], delay: float, rng: random.Random) -> tuple[str, int]:
    """Start the job, SIGKILL its launcher (or a rank) after ``delay`` seconds; (what happened, processes left
    GONE_WITHIN seconds later, all then killed here)."""
    resume = ["--resume"] if args[0] == "train-teacher" else []
    with (folder / "kills.log").open("a") as log:
        job = subprocess.Popen(_command(case, [*args, *resume]), cwd=folder, env=_env(folder, slow=True),
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[int, int] = {}
    try:
        end = time.monotonic() + delay
        while time.monotonic() < end and job.poll() is None:
            seen.update(descendants(job.pid))
            time.sleep(0.05)
        if job.poll() is not None:
            return ("finished first" if job.returncode == 0 else f"exit {job.returncode}"), 0
        seen.update(descendants(job.pid))
        ranks = [pid for pid in descendants(job.pid) if _ppid(pid) == job.pid]
        if CASES[case][2] == "rank" and ranks:
            os.kill(rng.choice(ranks), signal.SIGKILL)
            try:  # torchrun sees its rank fail and stops the others
                job.wait(timeout=60)
            except subprocess.TimeoutExpired:
                job.kill()
            what = "rank"
        else:
            os.kill(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
            what = "launcher"
        wait_for(lambda: not alive(seen), GONE_WITHIN, every=0.1)
        return what, len(alive(seen))
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        kill_all(seen)


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _finish(folder: Path, case: str, args: list[str]) -> None:
    resume = ["--resume"] if args[0] == "train-teacher" else []
    res = subprocess.run(_command(case, [*args, *resume]), cwd=folder, env=_env(folder, slow=False),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{case}: {res.stderr[-3000:]}"


def _results(folder: Path, args: list[str]) -> dict:
    """What the job reports: a study's rows (by labels: metric columns) or a run's summary columns and weights."""
    out = folder / "out"
    columns = RunSummary.keys("column")
    if args[0] == "study":
        rows = list(csv.DictReader((out / "results.csv").open()))
        return {(r["kind"], r["method_label"], r["seed"]): {k: r.get(k) for k in columns} for r in rows}
    summary = json.loads((out / "summary.json").read_text())
    weights = load_weights(out / "checkpoints" / "last.pt")["model_state"]
    return {"summary": {k: summary.get(k) for k in columns}, "weights": {k: v.clone() for k, v in weights.items()}}


def _same(a: dict, b: dict) -> bool:
    if "weights" in a:
        return a["summary"] == b["summary"] and a["weights"].keys() == b["weights"].keys() and \
            all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    return a == b


@pytest.mark.parametrize("case", list(CASES))
def test_kills_leave_no_process_and_no_wrong_result(tmp_path, case):
    rng = random.Random(f"{os.environ.get('KILL_SEED', '0')}-{case}")
    reference = tmp_path / "reference"
    args = _prepare(reference, case)
    _finish(reference, case, args)
    want = _results(reference, args)

    folder = tmp_path / "killed"
    _prepare(folder, case)
    kills = orphans = wrong = checked = 0
    # the moments: over start-up (torch loading, the process group forming) and training (an epoch ~ 1 s); a job
    # that finishes before its kill is checked and started anew, until KILLS kills have landed
    while kills < KILLS:
        what, left = _kill_once(folder, case, args, rng.uniform(0.5, 12.0), rng)
        orphans += left
        assert not what.startswith("exit"), f"{case}: {what}: {(folder / 'kills.log').read_text()[-3000:]}"
        if what == "finished first":
            checked += 1
            wrong += not _same(_results(folder, args), want)
            shutil.rmtree(folder / "out")
        else:
            kills += 1
    _finish(folder, case, args)
    checked += 1
    wrong += not _same(_results(folder, args), want)
    print(f"{case}: {kills} kills, {orphans} orphaned processes, {wrong} of {checked} results wrong",
          file=sys.__stderr__)
    assert orphans == 0 and wrong == 0, (kills, orphans, wrong, (folder / "kills.log").read_text()[-3000:])
