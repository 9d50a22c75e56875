"""Run folders written by the release before the layered package (tests/data/previous_release, see its make.py)
are reused when finished and resume when interrupted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from kdlab.config import TeacherRunConfig, load_config
from kdlab.core.checkpoint import load_weights
from kdlab.runs.folder import RunFolder
from kdlab.runs.student import distill
from kdlab.runs.teacher import train_teacher

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "previous_release"


def _copy(tmp_path: Path, monkeypatch) -> Path:
    old = tmp_path / "old"
    shutil.copytree(FIXTURE, old, ignore=shutil.ignore_patterns("make.py", "__pycache__"))
    monkeypatch.chdir(old)  # the runs' configs name their folders relative to it, as they were written
    return old


def test_finished_runs_of_the_previous_release_are_reused(tmp_path, monkeypatch):
    old = _copy(tmp_path, monkeypatch)
    teacher = train_teacher(str(old / "teacher" / "config.yaml"), resume=True)
    student = distill(str(old / "student" / "config.yaml"), resume=True)
    for result, name in ((teacher, "teacher"), (student, "student")):
        assert result.reused
        assert result.summary == json.loads(RunFolder(old / name).summary_file.read_text())
    assert RunFolder(old / "student").checkpoint("last").read_bytes() == \
        (FIXTURE / "student" / "checkpoints" / "last.pt").read_bytes()  # nothing was trained again


def test_an_interrupted_run_of_the_previous_release_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    old = _copy(tmp_path, monkeypatch)
    assert not RunFolder(old / "unfinished").is_finished()
    resumed = train_teacher(str(old / "unfinished" / "config.yaml"), resume=True)
    assert not resumed.reused and RunFolder(old / "unfinished").is_finished()
    cfg = load_config(TeacherRunConfig, str(old / "unfinished" / "config.yaml")).model_dump(mode="json")
    fresh = train_teacher({**cfg, "out_dir": str(tmp_path / "fresh")})
    a = load_weights(RunFolder(resumed.run_dir).checkpoint("last"))["model_state"]
    b = load_weights(RunFolder(fresh.run_dir).checkpoint("last"))["model_state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["top1"] == fresh.summary["top1"]
