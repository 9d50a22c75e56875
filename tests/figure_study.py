"""One tiny finished study with data for every figure, shared by test_figures and test_report.

2 teacher methods x 2 distillation methods x 2 seeds, a 2-point trajectory, a 2-value teacher sweep and a
switch_epoch sweep: 30 runs of 2 epochs on 192 mixed-feature examples (the trajectory's last point is the
plain KD student).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from conftest import TINY_DATA, TINY_TRAIN
from kdlab.analysis.study_command import run_study
from kdlab.config import StudyConfig, load_config
from kdlab.runs.folder import SUMMARY
from kdlab.study import plan_study
from kdlab.study.records import write_runs_file

_built: dict[str, Path] = {}


def tiny_config(out) -> dict:
    return {
        "name": "tiny-figures", "out_dir": str(out), "seeds": [0, 1], "data": dict(TINY_DATA),
        "teacher": {"model": {"name": "mlp", "hidden": [32]},
                    "methods": {"standard": "standard", "soteacher": "soteacher"},
                    "train": {**TINY_TRAIN, "save_every": 1}, "schedule": {"milestones": [1]}},
        "student": {"model": {"name": "mlp", "hidden": [16]},
                    "methods": {"alone": "none", "kd": "kd", "kdT2": {"name": "kd", "T": 2}},
                    "train": dict(TINY_TRAIN), "schedule": {"milestones": [1]}},
        "sweeps": [{"role": "teacher", "method": "soteacher", "param": "lambda_cr_max", "values": [0.5, 1.0]},
                   {"role": "student", "method": "kd", "param": "switch_epoch", "values": [0, 1]}],
        "trajectory": {"every": 1, "method": "kd"},
    }


def tiny_study(tmp_path_factory) -> Path:
    """The study folder, trained once per test session."""
    if "dir" not in _built:
        out = tmp_path_factory.mktemp("figures") / "study"
        res = run_study(tiny_config(out), log=lambda s: None)
        assert not res.failed and len(res.records) == 30
        _built["dir"] = out
    return _built["dir"]


def summaries(study_dir: Path) -> dict[Path, dict]:
    """summary.json of every run folder, by the folder's path relative to the study."""
    return {p.parent.relative_to(study_dir): json.loads(p.read_text()) for p in study_dir.rglob(SUMMARY)}


def reduced_copy(study_dir: Path, dest: Path, drop: tuple[str, ...], runs_file: bool = True) -> Path:
    """A study folder sharing the run folders (symlinks) whose study.yaml lacks the ``drop`` keys, with the
    runs.json `kdlab study` writes for it (``runs_file``; without it, the folder of a study written before
    runs.json)."""
    dest.mkdir(parents=True)
    cfg = yaml.safe_load((study_dir / "study.yaml").read_text())
    for key in drop:
        cfg.pop(key, None)
    (dest / "study.yaml").write_text(yaml.safe_dump(cfg))
    if runs_file:
        write_runs_file(plan_study(load_config(StudyConfig, {**cfg, "out_dir": str(dest)})), dest)
    for sub in ("teachers", "students"):
        (dest / sub).symlink_to(study_dir / sub, target_is_directory=True)
    return dest


def copy_study(study_dir: Path, dest: Path) -> Path:
    shutil.copytree(study_dir, dest, ignore=shutil.ignore_patterns("checkpoints", "figures", "report.*"))
    return dest
