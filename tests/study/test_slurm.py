"""``--launcher slurm`` on submitit's local executor (the same jobs, without a cluster): a study's runs as jobs
equal the runs trained here, a job that dies is reported with its log and its runs resume when the study runs
again; the options are checked in one line.  The real cluster's tests: test_slurm_cluster.py."""

from pathlib import Path

import pytest

from kdlab.analysis.study_command import run_study
from kdlab.core.errors import ConfigError
from kdlab.study.slurm import SlurmOptions, time_minutes
from study_configs import run_dirs, same_weights, teacher_and_students

TESTS = Path(__file__).resolve().parents[1]
pytest.importorskip("submitit")


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 2), ("02:00:00", 120), ("1-00", 1440),
                                           ("1-02:30", 1590), ("0:0:30", 1), ("2-00:00:00", 2880)])
def test_slurm_time_formats(text, minutes):
    assert time_minutes(text) == minutes


@pytest.mark.parametrize("options, gpus, message", [
    ({"time": "1:2:3:4"}, None, "--time: expected HH:MM:SS"),
    ({"nodes": 2}, None, "slurm options: unknown nodes"),
    ({}, 1.5, "--gpus-per-run: a Slurm job takes a whole number of GPUs"),
    ({"max_parallel": 0}, None, "--max-parallel: a whole number >= 1"),
    ({"cluster": "pbs"}, None, "cluster is slurm or local")])
def test_slurm_options_are_checked_in_one_line(options, gpus, message):
    with pytest.raises(ConfigError, match=message):
        SlurmOptions.of(options, gpus)


def test_a_study_as_jobs_equals_the_study_run_here(tmp_path):
    lines = []
    here = run_study(teacher_and_students(tmp_path / "here"), log=lambda s: None, report=False)
    jobs = run_study(teacher_and_students(tmp_path / "jobs"), log=lines.append, report=False, launcher="slurm",
                     slurm_options={"cluster": "local", "time": "00:10:00"})
    assert not jobs.failed and jobs.ran == here.ran == 3
    a, b = run_dirs(tmp_path / "here"), run_dirs(tmp_path / "jobs")
    assert a.keys() == b.keys() and all(same_weights(a[k], b[k]) for k in a)
    logs = tmp_path / "jobs" / "slurm"
    assert len(list(logs.glob("*_0_log.out"))) == 3 and (logs / "jobs.json").is_file()  # one job per run
    # run again: nothing is submitted, every run is reused
    again = run_study(teacher_and_students(tmp_path / "jobs"), log=lambda s: None, report=False, launcher="slurm",
                      slurm_options={"cluster": "local"})
    assert again.ran == 0 and len(list(logs.glob("*_0_log.out"))) == 3


def test_max_parallel_caps_the_jobs_in_the_queue(tmp_path):
    lines = []
    run_study(teacher_and_students(tmp_path / "jobs"), log=lines.append, report=False, launcher="slurm",
              slurm_options={"cluster": "local", "max_parallel": 1})
    events = ["queued" if ln.startswith("slurm: job") else "done" for ln in lines
              if ln.startswith("slurm: job") or ln.startswith("[")]
    assert events == ["queued", "done"] * 3  # one job at a time


def test_a_job_at_its_time_limit_is_requeued_and_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    # the local executor signals the job (SIGUSR2) signal_delay_s before its limit, as Slurm does with submitit's
    # --signal; the job checkpoints its task and starts again, and the run resumes from its last epoch
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pause = tmp_path / "pause"
    pause.mkdir()
    monkeypatch.setenv("KDLAB_TEST_PAUSE", str(pause))
    model = {"name": "module", "target": "user_nets:PauseOnceNet", "kwargs": {"pause_at": 8}}  # epoch 2 of 3
    cfg = teacher_and_students(tmp_path / "jobs", model)
    cfg["teacher"]["methods"], cfg["student"]["methods"] = {}, {"alone": "none"}
    res = run_study(cfg, log=lambda s: None, report=False, launcher="slurm",
                    slurm_options={"cluster": "local", "time": "0:40", "signal_delay_s": 20})
    assert not res.failed and res.ran == 1 and (pause / "paused").exists()
    logs = "".join(p.read_text() for p in (tmp_path / "jobs" / "slurm").glob("*_log.*"))
    assert "Caught signal SIGUSR2" in logs and logs.count("Starting with JobEnvironment") >= 2
    monkeypatch.delenv("KDLAB_TEST_PAUSE")
    plain = run_study({**cfg, "out_dir": str(tmp_path / "plain")}, log=lambda s: None, report=False)
    a, b = run_dirs(tmp_path / "plain"), run_dirs(tmp_path / "jobs")
    assert not plain.failed and a.keys() == b.keys() and all(same_weights(a[k], b[k]) for k in a)


def test_a_job_that_dies_is_reported_and_its_run_resumes_next_time(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("KDLAB_TEST_DIE_ONCE", str(tmp_path / "died"))
    died = {"name": "module", "target": "user_nets:DieOnceNet", "kwargs": {"die_at": 8}}  # in epoch 2 of 3
    cfg = teacher_and_students(tmp_path / "jobs", died)
    cfg["student"]["methods"] = {"alone": "none"}
    lines = []
    first = run_study(cfg, log=lines.append, report=False, launcher="slurm", allow_failures=True,
                      slurm_options={"cluster": "local"})
    assert (tmp_path / "died").exists() and len(first.failed) == 1
    assert "slurm job" in first.failed[0]
    summary = lines.index(next(ln for ln in lines if ln.startswith("slurm: 1 job(s) failed")))
    assert "stderr: " in lines[summary + 1] and lines[summary + 1].strip().endswith("_0_log.err")
    second = run_study(cfg, log=lambda s: None, report=False, launcher="slurm", slurm_options={"cluster": "local"})
    assert not second.failed and second.ran == 1  # resumed from its epoch-1 checkpoint
    monkeypatch.delenv("KDLAB_TEST_DIE_ONCE")
    plain = run_study({**cfg, "out_dir": str(tmp_path / "plain")}, log=lambda s: None, report=False)
    assert not plain.failed
    a, b = run_dirs(tmp_path / "plain"), run_dirs(tmp_path / "jobs")
    assert a.keys() == b.keys() and all(same_weights(a[k], b[k]) for k in a)
