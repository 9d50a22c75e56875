"""Run a study: every teacher once per (method, seed), every student once per (teacher, method, seed).

Layout under ``out_dir``::

    study.yaml                                   the resolved study config
    teachers/<teacher label>/seed<k>/            teacher runs
    students/<teacher label>/<method label>/seed<k>/   distilled students
    students/<method label>/seed<k>/             students that need no teacher (e.g. 'none')
    results.csv, results.md                      one row per run; the comparison table

A run that has finished (``summary.json``) is reused; an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import StudyConfig, dump_yaml, load_config
from ..engine.checkpoint import atomic_write_text
from ..methods import needs_teacher
from ..registry import MODELS
from ..runs import RunResult, distill, train_teacher
from .table import fmt_cell, markdown_table, to_csv

CSV_COLUMNS = ["kind", "teacher_label", "method_label", "seed", "model", "method", "top1", "top5", "nll", "ece",
               "best_top1", "best_epoch", "teacher_top1", "agreement", "kl_teacher_student", "pstar_l1_train",
               "pstar_l1_test", "params", "train_time", "run_dir"]


@dataclass
class PlannedRun:
    kind: str  # teacher | student
    teacher_label: str | None
    method_label: str
    seed: int
    run_dir: Path
    config: dict[str, Any]


@dataclass
class StudyResult:
    out_dir: Path
    records: list[dict[str, Any]]
    table: str
    ran: int = 0
    reused: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def plan_study(cfg: StudyConfig) -> list[PlannedRun]:
    out = Path(cfg.out_dir)
    data = cfg.data.model_dump()
    plan: list[PlannedRun] = []

    def role_cfg(role, seed: int, run_dir: Path) -> dict[str, Any]:
        return {"seed": seed, "out_dir": str(run_dir), "data": data, "holdout": cfg.holdout,
                "optim": role.optim.model_dump(),
                "schedule": role.schedule.model_dump(), "train": role.train.model_dump()}

    for tlabel, tspec in cfg.teacher.methods.items():
        for seed in cfg.seeds:
            d = out / "teachers" / tlabel / f"seed{seed}"
            c = role_cfg(cfg.teacher, seed, d) | {"model": cfg.teacher.model.model_dump(), "method": tspec.model_dump()}
            plan.append(PlannedRun("teacher", tlabel, tlabel, seed, d, c))
    for mlabel, mspec in cfg.student.methods.items():
        base = {"student": cfg.student.model.model_dump(), "method": mspec.model_dump()}
        if not needs_teacher(mspec.name):
            for seed in cfg.seeds:
                d = out / "students" / mlabel / f"seed{seed}"
                plan.append(PlannedRun("student", None, mlabel, seed, d, role_cfg(cfg.student, seed, d) | base))
            continue
        for tlabel in cfg.teacher.methods:
            for seed in cfg.seeds:
                d = out / "students" / tlabel / mlabel / f"seed{seed}"
                teacher = {"path": str(out / "teachers" / tlabel / f"seed{seed}"),
                           "checkpoint": cfg.student.teacher_checkpoint}
                c = role_cfg(cfg.student, seed, d) | base | {"teacher": teacher}
                plan.append(PlannedRun("student", tlabel, mlabel, seed, d, c))
    return plan


def _execute(run: PlannedRun) -> RunResult:
    fn = train_teacher if run.kind == "teacher" else distill
    return fn(run.config, resume=True)


def run_study(config: Any, overrides: list[str] = (), log: Callable[[str], None] | None = None) -> StudyResult:
    """Run what is missing of a study and write its results; returns the records and the markdown table."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    cfg = load_config(StudyConfig, config, overrides)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", dump_yaml(cfg))
    plan = plan_study(cfg)
    records, ran, reused = [], 0, 0
    t0 = time.perf_counter()
    for i, run in enumerate(plan, 1):
        label = run.method_label if run.teacher_label in (None, run.method_label) else \
            f"{run.teacher_label}/{run.method_label}"
        res = _execute(run)
        if res.reused:
            reused += 1
        else:
            ran += 1
            log(f"[{i}/{len(plan)}] {run.kind} {label} seed {run.seed}: top-1 {res.summary['top1']:.2f}% "
                f"({res.summary['train_time']:.0f}s) -> {run.run_dir}")
        records.append({"kind": run.kind, "teacher_label": run.teacher_label or "", "method_label": run.method_label,
                        **res.summary, "run_dir": str(run.run_dir)})
    table = comparison_table(cfg, records)
    atomic_write_text(out / "results.csv", to_csv(records, CSV_COLUMNS))
    atomic_write_text(out / "results.md", f"# {cfg.name}\n\n{table}\n")
    log(f"study {cfg.name}: {ran} runs trained, {reused} reused, {time.perf_counter() - t0:.0f}s; "
        f"results in {out}/results.md")
    return StudyResult(out, records, table, ran, reused)


def comparison_table(cfg: StudyConfig, records: list[dict[str, Any]]) -> str:
    """Rows: teacher methods.  Columns: teacher top-1 (and, on data with a known p*(x), the teacher's distance
    to it on its training inputs), then the student top-1 of each distillation method."""
    def values(kind: str, tlabel: str | None, mlabel: str, key: str = "top1") -> list[float]:
        return [r[key] for r in records if r["kind"] == kind and r["method_label"] == mlabel
                and (tlabel is None or r["teacher_label"] == tlabel) and key in r]

    has_pstar = any("pstar_l1_train" in r for r in records if r["kind"] == "teacher")
    t_model = MODELS.describe(cfg.teacher.model.name, cfg.teacher.model.params)
    s_model = MODELS.describe(cfg.student.model.name, cfg.student.model.params)
    header = ["teacher method", "teacher"] + (["teacher L1 to p* (train)"] if has_pstar else []) + \
             [f"student {lbl}" for lbl in cfg.student.methods]
    rows = []
    for tlabel in cfg.teacher.methods:
        row = [tlabel, fmt_cell(values("teacher", tlabel, tlabel))]
        if has_pstar:
            row.append(fmt_cell(values("teacher", tlabel, tlabel, "pstar_l1_train"), digits=3))
        for mlabel, mspec in cfg.student.methods.items():
            t = tlabel if needs_teacher(mspec.name) else None
            row.append(fmt_cell(values("student", t, mlabel)))
        rows.append(row)
    caption = (f"{cfg.data.name}: teacher {t_model}, student {s_model}; test top-1 % at the last epoch, "
               f"mean ± std over seeds {list(cfg.seeds)} (n runs)")
    return caption + "\n\n" + markdown_table(header, rows)
