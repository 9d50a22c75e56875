"""``--launcher slurm`` against a real Slurm cluster (CI starts a single-node one: .ci/slurm_up.sh): a study's
jobs, with the students' jobs depending on their teacher's, equal the runs trained here; a job requeued mid-run
(``scontrol requeue``) resumes to bit-identical weights; a run of 2 processes is one DDP job of 2 tasks.

Skipped where no cluster answers, unless ``KDLAB_REQUIRE_SLURM=1`` (CI as root), where that is a failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import TINY_DATA
from kdlab.analysis.study_command import run_study
from kdlab.study import execute
from study_configs import run_dirs, same_weights, teacher_and_students

TESTS = Path(__file__).resolve().parents[1]


def _cluster_up() -> bool:
    if not shutil.which("sbatch"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s.strip().rstrip("*") in ("idle", "mixed", "allocated") for s in out.splitlines())


if not _cluster_up():
    if os.environ.get("KDLAB_REQUIRE_SLURM") == "1":
        pytest.fail("KDLAB_REQUIRE_SLURM=1 but no Slurm cluster answers (sinfo); .ci/slurm_up.sh starts one",
                    pytrace=False)
    pytest.skip("no Slurm cluster here (.ci/slurm_up.sh starts a single-node one)", allow_module_level=True)
pytest.importorskip("submitit")

SLURM = {"time": "00:20:00"}


def _scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                         timeout=30).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def _jobs(study: Path) -> dict[str, str]:
    return json.loads((study / "slurm" / "jobs.json").read_text())


def _wait(what: str, check, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_a_study_on_slurm_equals_the_study_run_here(tmp_path):
    here = run_study(teacher_and_students(tmp_path / "here"), log=lambda s: None, report=False)
    lines = []
    jobs = run_study(teacher_and_students(tmp_path / "slurm"), log=lines.append, report=False, launcher="slurm",
                     slurm_options={**SLURM, "partition": "debug", "account": "proj", "qos": "normal",
                                    "cpus_per_run": 1})
    assert not jobs.failed and jobs.ran == here.ran == 3
    a, b = run_dirs(tmp_path / "here"), run_dirs(tmp_path / "slurm")
    assert a.keys() == b.keys() and all(same_weights(a[k], b[k]) for k in a)
    ids = _jobs(tmp_path / "slurm")
    teacher = next(v for k, v in ids.items() if "/teachers/" in k)
    students = [v for k, v in ids.items() if "/students/" in k]
    # the students were queued at once, waiting for the teacher's job
    kd = next(v for k, v in ids.items() if k.endswith("/kd/seed0"))
    script = (tmp_path / "slurm" / "slurm" / f"{kd}_submission.sh").read_text()
    for option in (f"--dependency=afterok:{teacher}", "--kill-on-invalid-dep=yes", "--partition=debug",
                   "--account=proj", "--qos=normal", "--time=20", "--cpus-per-task=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {option}\n" in script, option
    assert f"slurm: job {kd} queued: student mlp(hidden=[16]) standard/kd seed 0 (after job {teacher})" in lines
    assert _scontrol(kd)["Account"] == "proj"
    _wait("the jobs to complete", lambda: all(_scontrol(j).get("JobState") == "COMPLETED"
                                              for j in [teacher, *students]), 60)


def test_a_requeued_job_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    model = {"name": "module", "target": "user_nets:PauseOnceNet", "kwargs": {"pause_at": 8}}  # in epoch 2 of 3
    cfg = teacher_and_students(tmp_path / "slurm", model)
    cfg["teacher"]["methods"], cfg["student"]["methods"] = {}, {"alone": "none"}
    pause = tmp_path / "pause"
    pause.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the jobs inherit this environment
    monkeypatch.setenv("KDLAB_TEST_PAUSE", str(pause))
    result: dict = {}
    study = threading.Thread(target=lambda: result.update(res=run_study(
        cfg, log=lambda s: None, report=False, launcher="slurm", slurm_options=SLURM, allow_failures=True)))
    study.start()
    try:
        _wait("the job to reach epoch 2", lambda: (pause / "paused").exists())
        job = next(iter(_jobs(tmp_path / "slurm").values()))
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
        # a requeued job waits ~2 minutes before it may start again: let it start now
        _wait("the job back in the queue", lambda: _scontrol(job).get("JobState") == "PENDING", 120)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)
        study.join(timeout=600)
    finally:
        (pause / "go").touch()
        study.join(timeout=60)
    res = result["res"]
    assert not res.failed and res.ran == 1
    # the job's result is written before its step ends
    _wait("the job to complete", lambda: _scontrol(job)["JobState"] == "COMPLETED", 60)
    assert _scontrol(job)["Restarts"] == "1"
    log = (tmp_path / "slurm" / "slurm" / f"{job}_0_log.err").read_text()
    assert "DUE TO JOB REQUEUE" in log
    monkeypatch.delenv("KDLAB_TEST_PAUSE")
    plain = run_study({**cfg, "out_dir": str(tmp_path / "plain")}, log=lambda s: None, report=False)
    assert not plain.failed
    a, b = run_dirs(tmp_path / "plain"), run_dirs(tmp_path / "slurm")
    assert a.keys() == b.keys() and all(same_weights(a[k], b[k]) for k in a)


def _ranked_study(out: Path) -> dict:
    model = {"name": "module", "target": "user_nets:RankNet"}
    return {"name": "ddp", "out_dir": str(out), "seeds": [0], "data": dict(TINY_DATA),
            "teacher": {"model": "resnet8", "methods": {}},
            "student": {"model": model, "methods": {"alone": "none"},
                        "train": {"epochs": 2, "batch_size": 64, "progress": "off", "device": "cpu"}}}


def test_a_run_of_two_processes_is_one_ddp_job_of_two_tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    for name in ("slurm", "local"):
        (tmp_path / f"ranks-{name}").mkdir()
    monkeypatch.setenv("KDLAB_TEST_RANKS", str(tmp_path / "ranks-slurm"))
    res = run_study(_ranked_study(tmp_path / "slurm"), log=lambda s: None, report=False, launcher="slurm",
                    slurm_options={**SLURM, "processes_per_run": 2})
    assert not res.failed and res.ran == 1
    ranks = {p.name: p.read_text() for p in (tmp_path / "ranks-slurm").iterdir()}
    assert ranks == {"rank0": "2 0 2 -", "rank1": "2 1 2 -"}  # WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE (no GPU)
    job = next(iter(_jobs(tmp_path / "slurm").values()))
    assert _scontrol(job)["NumTasks"] == "2"
    # the same run as 2 processes started here (kdlab's torchrun): the same weights, bit for bit
    monkeypatch.setenv("KDLAB_TEST_RANKS", str(tmp_path / "ranks-local"))
    monkeypatch.setattr(execute, "visible_gpus", lambda: ["0", "1"])
    local = run_study(_ranked_study(tmp_path / "local"), log=lambda s: None, report=False, gpus_per_run=2)
    assert not local.failed
    a, b = run_dirs(tmp_path / "local"), run_dirs(tmp_path / "slurm")
    assert a.keys() == b.keys() and all(same_weights(a[k], b[k]) for k in a)
