"""A study's runs as typed records, and reading a finished (or partly finished) study back from its folder: config,
one :class:`RunRecord` per finished run, and the per-run files the figures need (``metrics.jsonl``, test logits
and labels).

``kdlab study`` writes ``runs.json`` into the study folder when it starts: one entry per planned run with its
labels, its run folder and the run folder of its teacher, both relative to the study folder (so a moved or copied
study still reads).  :func:`load_study` reads ``study.yaml``, ``runs.json`` and each run's ``summary.json`` - the
study is not planned again.  Records are rebuilt from the run folders' summaries, not from ``results.csv``, so
figures and reports always agree with what is on disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdlab.config import StudyConfig, load_config
from kdlab.config.loader import read_yaml
from kdlab.core.checkpoint import atomic_write_text
from kdlab.core.errors import KdlabError
from kdlab.runs.folder import CONFIG, MANIFEST, METRICS, SUMMARY, TEST_LABELS, TEST_LOGITS, RunFolder, damaged_files
from kdlab.runs.reuse import summary_differences

if TYPE_CHECKING:
    from kdlab.study.plan import PlannedRun

RUNS_FILE = "runs.json"
RUNS_VERSION = 1
# the labels of a run, in results.csv's order (its metrics follow)
LABEL_COLUMNS = ["kind", "pair", "arch", "teacher_label", "method_label", "seed", "sweep_param", "sweep_value",
                 "sweep_base", "trajectory_epoch"]


class StudyDataError(KdlabError):
    """A study folder is missing, holds no finished runs, or lacks the runs a figure needs."""


@dataclass(frozen=True)
class RunRecord:
    """One finished run of a study: its labels and folders from the plan, its metrics from its ``summary.json``."""

    kind: str  # teacher | assistant | student
    pair: str | None  # the plan's "<teacher>--<student>" key (None: shared teacher / student without teacher)
    arch: str
    teacher_label: str | None
    method_label: str
    seed: int
    run_dir: Path
    teacher_run_dir: Path | None  # the run it was distilled from, from the plan (never recovered from a checkpoint)
    sweep_param: str | None = None
    sweep_value: Any = None
    sweep_base: str | None = None
    trajectory_epoch: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)  # the run's summary.json
    status: str = "finished"  # finished | failed | skipped (its teacher failed) | missing (neither finished nor failed)
    reason: str | None = None  # why a run did not finish: its error's first line

    @classmethod
    def from_run(cls, planned_run: PlannedRun, summary: Mapping[str, Any]) -> RunRecord:
        run = planned_run
        return cls(**plan_labels(run), run_dir=Path(run.run_dir),
                   teacher_run_dir=Path(run.needs[0]) if run.needs else None, metrics=dict(summary))

    @classmethod
    def unfinished(cls, planned_run: PlannedRun, error: str | None) -> RunRecord:
        """A planned run without results: ``error`` as the study's executor reports it (None: missing)."""
        run = planned_run
        status, reason = failure_status(error)
        return cls(**plan_labels(run), run_dir=Path(run.run_dir),
                   teacher_run_dir=Path(run.needs[0]) if run.needs else None, status=status, reason=reason)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], study_dir: Path, summary: Mapping[str, Any],
                   status: str = "finished", reason: str | None = None) -> RunRecord:
        """A record from its ``runs.json`` entry (folders relative to ``study_dir``)."""
        teacher = entry.get("teacher_run_dir")
        return cls(**{k: entry.get(k) for k in LABEL_COLUMNS}, run_dir=study_dir / entry["run_dir"],
                   teacher_run_dir=study_dir / teacher if teacher else None, metrics=dict(summary),
                   status=status, reason=reason)

    @property
    def from_checkpoint(self) -> bool:
        """A trajectory student distilled from one of the teacher's checkpoints (``<method>@<epoch>``); the plain
        student, the trajectory's point at the teacher's last epoch, is not."""
        return self.trajectory_epoch is not None and self.method_label != self.sweep_base

    def get(self, key: str, default=None):
        """A metric (``metrics[key]``) or, for the names of the fields above, the field."""
        if key in _FIELDS:
            return getattr(self, key)
        return self.metrics.get(key, default)

    def __getitem__(self, key: str):
        """``record[key]``: as :meth:`get`, but a KeyError for a metric the run lacks (scripts written against the
        dict records keep working)."""
        if key in _FIELDS:
            return getattr(self, key)
        return self.metrics[key]

    def labels(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in LABEL_COLUMNS}

    def row(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The run's line of ``results.csv``: its metrics, labels and run folder (relative to ``relative_to``
        when inside it, so that the file does not depend on where the study folder is)."""
        run_dir = self.run_dir
        if relative_to is not None and run_dir.is_relative_to(relative_to):
            run_dir = run_dir.relative_to(relative_to)
        return {**self.metrics, **self.labels(), "run_dir": str(run_dir), "status": self.status,
                "reason": self.reason or ""}

    @property
    def what(self) -> str:
        """The run's method as the incomplete line names it: the label, with its kind unless a student."""
        return self.method_label if self.kind == "student" else f"{self.kind} {self.method_label}"


_FIELDS = frozenset(f.name for f in fields(RunRecord)) - {"metrics"}


SKIPPED = "skipped: "  # how the executor's error of a run whose prerequisite failed begins


def failure_status(error: str | None) -> tuple[str, str | None]:
    """(status, reason) of a run that did not finish, from the executor's error (None: missing)."""
    if error is None:
        return "missing", "not run yet (the study was interrupted, or is still running)"
    status = "skipped" if error.startswith(SKIPPED) else "failed"
    text = error[len(SKIPPED):] if status == "skipped" else error
    return status, (text.strip().splitlines() or [""])[0]


def incomplete(records: Iterable[RunRecord]) -> list[str]:
    """One entry per method (in plan order) with runs that did not finish, e.g. ``crd (3 of 3 runs failed:
    method.nce_k: ...)``: how many of its planned runs failed, were skipped or are missing, and the first reason
    of each."""
    runs: dict[str, list[RunRecord]] = {}
    for r in records:
        runs.setdefault(r.what, []).append(r)
    out = []
    for what, rs in runs.items():
        bad = [r for r in rs if r.status != "finished"]
        if not bad:
            continue
        parts = []
        for status in ("failed", "skipped", "missing"):
            of = [r for r in bad if r.status == status]
            if of:
                parts.append(f"{len(of)} {status}: {of[0].reason}")
        out.append(f"{what} ({len(bad)} of {len(rs)} runs did not finish: " + "; ".join(parts) + ")"
                   if len(parts) > 1 else f"{what} ({len(bad)} of {len(rs)} runs {parts[0].split(' ', 1)[1]})")
    return out


FAILURES_FILE = "failures.json"


def write_failures_file(records: Iterable[RunRecord], study_dir: str | Path) -> Path:
    """``<study_dir>/failures.json``: the status and reason of each planned run that did not finish in the
    study's last execution (folders relative to the study folder); a run that finishes later reads as finished."""
    d = Path(study_dir)
    runs = {_relative(r.run_dir, d): {"status": r.status, "reason": r.reason} for r in records
            if r.status != "finished"}
    path = d / FAILURES_FILE
    atomic_write_text(path, json.dumps({"version": 1, "runs": runs}, indent=1) + "\n")
    return path


def _failures(d: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((d / FAILURES_FILE).read_text())
        return {k: v for k, v in data["runs"].items() if isinstance(v, dict)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no failures recorded (an older study, or none failed): unfinished runs read as missing


def plan_labels(run: PlannedRun) -> dict[str, Any]:
    info = run.info
    return {"kind": run.kind, "pair": run.pair, "arch": run.arch, "teacher_label": run.teacher_label,
            "method_label": run.method_label, "seed": run.seed, "sweep_param": info.get("param"),
            "sweep_value": info.get("value"), "sweep_base": info.get("base"),
            "trajectory_epoch": info.get("trajectory_epoch")}


def _relative(path: Path, study_dir: Path) -> str:
    """A run folder as runs.json stores it: relative to the study folder.  A run folder outside it (a shared
    ``runs_dir``) stays absolute if it was configured absolute, else it is relative too (``../``)."""
    p, d = os.path.abspath(path), os.path.abspath(study_dir)
    if os.path.commonpath([p, d]) != d and Path(path).is_absolute():
        return Path(path).as_posix()
    return Path(os.path.relpath(p, d)).as_posix()


def run_entry(run: PlannedRun, study_dir: Path) -> dict[str, Any]:
    """A planned run's entry of ``runs.json``: its labels, its folder and its teacher's, relative to the study."""
    return {**plan_labels(run), "run_dir": _relative(run.run_dir, study_dir),
            "teacher_run_dir": _relative(run.needs[0], study_dir) if run.needs else None}


def write_runs_file(plan: Iterable[PlannedRun], study_dir: str | Path) -> Path:
    """``<study_dir>/runs.json``: every planned run's labels and folders (relative to the study folder)."""
    d = Path(study_dir)
    runs = [run_entry(r, d) for r in plan]
    path = d / RUNS_FILE
    atomic_write_text(path, json.dumps({"version": RUNS_VERSION, "runs": runs}, indent=1) + "\n")
    return path


@dataclass
class StudyData:
    study_dir: Path
    config: StudyConfig
    records: list[RunRecord]
    planned: int  # runs in the study's plan (finished or not)
    unfinished: list[RunRecord] = field(default_factory=list)  # the others: failed, skipped or missing, with why


def _check(run_dir: Path, *names: str) -> None:
    """Results are read only when they match the checksums the run wrote when it finished, for its config."""
    bad = damaged_files(run_dir, (CONFIG, *names))
    if bad:
        what = (f"{run_dir} has no readable {MANIFEST} (nothing proves its results)" if bad == [MANIFEST] else
                f"{run_dir / bad[0]} does not match the run's checksums (edited or damaged, or another run's)")
        raise StudyDataError(f"{what}; rerun the study (`kdlab study <its study.yaml>`): it recomputes the run's "
                             "results from its final checkpoint")


def _summary(run_dir: Path) -> dict[str, Any] | None:
    path = RunFolder(run_dir).summary_file
    if not path.is_file():
        return None
    _check(run_dir, SUMMARY)
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StudyDataError(f"{path} is unreadable ({e}); rerun the study to recompute it") from None
    if not isinstance(out, dict):
        raise StudyDataError(f"{path} is damaged (not a run summary); rerun the study to recompute it")
    try:
        config = read_yaml(RunFolder(run_dir).config_file)
    except (KdlabError, OSError, UnicodeDecodeError):
        config = {}
    diff = summary_differences(out, config) if isinstance(config, dict) else []
    if diff:
        raise StudyDataError(f"{path} belongs to another run ({diff[0]}); rerun the study to recompute it")
    return out


def _entries(d: Path, cfg: StudyConfig) -> list[dict[str, Any]]:
    """The planned runs of the study in folder ``d``, as ``runs.json`` entries."""
    path = d / RUNS_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return list(data["runs"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StudyDataError(f"{path} is unreadable: {e}") from None
    # A study folder written before kdlab wrote runs.json: only then is the study planned again (once, with
    # out_dir set to the folder given), to know its runs and their teachers.
    from kdlab.study.plan import plan_study

    return [run_entry(r, d) for r in plan_study(cfg)]


def load_study(study_dir: str | Path) -> StudyData:
    """The study's config and one :class:`RunRecord` per finished run, from ``study.yaml``, ``runs.json`` and the
    runs' ``summary.json`` files."""
    d = Path(study_dir)
    if not d.is_dir():
        raise StudyDataError(f"study folder not found: {d}")
    if not (d / "study.yaml").is_file():
        raise StudyDataError(f"{d} is not a study folder (no study.yaml); run `kdlab study CONFIG.yaml` first")
    raw = read_yaml(d / "study.yaml")
    raw["out_dir"] = str(d)
    cfg = load_config(StudyConfig, raw)
    entries = _entries(d, cfg)
    records, unfinished, failures = [], [], _failures(d)
    for entry in entries:
        summary = _summary(d / entry["run_dir"])
        if summary is not None:
            records.append(RunRecord.from_entry(entry, d, summary))
            continue
        status, reason = failure_status(None)
        known = failures.get(entry["run_dir"])
        if known is not None and known.get("status") in ("failed", "skipped"):
            status, reason = known["status"], str(known.get("reason") or "")
        unfinished.append(RunRecord.from_entry(entry, d, {}, status, reason))
    if not records:
        why = "; ".join(incomplete(unfinished))
        raise StudyDataError(f"{d} holds no finished runs yet" + (f" (incomplete: {why})" if why else "") +
                             f"; run `kdlab study {d / 'study.yaml'}`")
    return StudyData(d, cfg, records, len(entries), unfinished)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = RunFolder(run_dir).metrics_file
    if not path.is_file():
        return []
    _check(Path(run_dir), METRICS)
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise StudyDataError(f"{path} is unreadable ({e}); rerun the study to rewrite it") from None


def read_predictions(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(test logits, test labels) of a run, or None for a run written before labels were saved."""
    d = Path(run_dir)
    folder = RunFolder(d)
    if not folder.test_logits_file.is_file() or not folder.test_labels_file.is_file():
        return None
    _check(d, TEST_LOGITS, TEST_LABELS)
    try:
        logits, labels = np.load(folder.test_logits_file), np.load(folder.test_labels_file)
    except (OSError, ValueError) as e:
        raise StudyDataError(f"{d / 'test_logits.npy'} or test_labels.npy is unreadable ({e}); rerun the study to "
                             "recompute them") from None
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise StudyDataError(f"{d}: test_logits.npy {logits.shape} and test_labels.npy {labels.shape} do not fit "
                             "each other; rerun the study to recompute them")
    return logits, labels
