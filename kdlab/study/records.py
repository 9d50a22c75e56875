"""Read a finished (or partly finished) study back from its folder: config, one record per finished run, and the
per-run files the figures need (``metrics.jsonl``, test logits and labels).

Records are rebuilt from the run folders' ``summary.json`` files, not from ``results.csv``, so figures and
reports always agree with what is on disk.  The study is re-planned with ``out_dir`` set to the folder given, so
a study folder that was moved or copied elsewhere still reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import StudyConfig, load_config
from ..config.loader import read_yaml
from ..errors import KdlabError
from .plan import plan_study
from .runner import record


class StudyDataError(KdlabError):
    """A study folder is missing, holds no finished runs, or lacks the runs a figure needs."""


@dataclass
class StudyData:
    study_dir: Path
    config: StudyConfig
    records: list[dict[str, Any]]
    planned: int  # runs in the study's plan (finished or not)


def load_study(study_dir: str | Path) -> StudyData:
    """The study's config and one record per finished run (the runner's record plus ``teacher_run_dir``)."""
    d = Path(study_dir)
    if not d.is_dir():
        raise StudyDataError(f"study folder not found: {d}")
    if not (d / "study.yaml").is_file():
        raise StudyDataError(f"{d} is not a study folder (no study.yaml); run `kdlab study CONFIG.yaml` first")
    raw = read_yaml(d / "study.yaml")
    raw["out_dir"] = str(d)
    cfg = load_config(StudyConfig, raw)
    records = []
    plan = plan_study(cfg)
    for run in plan:
        path = run.run_dir / "summary.json"
        if not path.is_file():
            continue
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise StudyDataError(f"{path} is unreadable: {e}") from None
        rec = record(run, summary)
        rec["teacher_run_dir"] = str(run.needs[0]) if run.needs else None
        records.append(rec)
    if not records:
        raise StudyDataError(f"{d} holds no finished runs yet; run `kdlab study {d / 'study.yaml'}`")
    return StudyData(d, cfg, records, len(plan))


def teacher_run_dir(rec: dict[str, Any]) -> Path | None:
    """The run folder of the teacher a student was distilled from (records of run_study carry only the
    checkpoint path of its summary: ``<teacher run>/checkpoints/<name>.pt``)."""
    if rec.get("teacher_run_dir"):
        return Path(rec["teacher_run_dir"])
    if rec.get("teacher_path"):
        return Path(rec["teacher_path"]).parent.parent
    return None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_predictions(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(test logits, test labels) of a run, or None for a run written before labels were saved."""
    d = Path(run_dir)
    if not (d / "test_logits.npy").is_file() or not (d / "test_labels.npy").is_file():
        return None
    return np.load(d / "test_logits.npy"), np.load(d / "test_labels.npy")
