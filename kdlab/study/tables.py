"""The seeds' kind of tables, from a study's records (one dict per finished run: its summary plus plan labels).

Per teacher/student pair:

* **distillation** - columns are teacher methods (the first is the baseline); rows are the teacher's accuracy, the
  student trained without a teacher, then one row per distillation method with the student's accuracy and its
  difference to the baseline teacher's column, then Best and Average rows over the distillation methods;
* **teacher quality** - per teacher method: accuracy, ECE and NLL before and after temperature scaling (when the
  study holds data out), distance to the true label distribution on training and test inputs (mixed-feature);
* **fidelity** - per distillation method and teacher method: top-1 agreement, KL(teacher ‖ student) and linear
  CKA of the penultimate representations.

Every cell is mean ± std over seeds with n; the trajectory and sweep figures have their own tables (``figures``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .table import fmt_cell, markdown_table, mean_std


def _values(records: Iterable[dict], key: str = "top1", **match: Any) -> list[float]:
    return [r[key] for r in records if key in r and r[key] is not None
            and all(r.get(k) == v for k, v in match.items())]


def _mean(records, key="top1", **match) -> float:
    return mean_std(_values(records, key, **match))[0]


def _delta(mu: float, base: float) -> str:
    if math.isnan(mu) or math.isnan(base):
        return ""
    return f" ({mu - base:+.2f})"


def _teachers_of(records: list[dict], pair: dict) -> list[dict]:
    """The pair's teachers: shared ones and those trained for this pair's student (SFTN's branches)."""
    return [r for r in records if r["kind"] == "teacher" and r["arch"] == pair["teacher"]
            and r.get("pair") in (None, pair["key"])]


def distillation_table(records: list[dict], pair: dict, teacher_labels: list[str], alone_labels: list[str],
                       distill_labels: list[str]) -> str:
    base = teacher_labels[0]
    t_recs = _teachers_of(records, pair)
    s_recs = [r for r in records if r["kind"] == "student"]
    header = ["", *teacher_labels]
    rows = []
    t_base = _mean(t_recs, teacher_label=base)
    rows.append([f"Teacher {pair['teacher']}"] + [
        fmt_cell(_values(t_recs, teacher_label=t)) + (_delta(_mean(t_recs, teacher_label=t), t_base) if t != base
                                                      else "") for t in teacher_labels])
    if pair.get("assistant"):
        a_recs = [r for r in records if r["kind"] == "assistant" and r.get("pair") == pair["key"]]
        rows.append([f"Assistant {pair['assistant']}"] + [fmt_cell(_values(a_recs, teacher_label=t))
                                                          for t in teacher_labels])
    for a in alone_labels:
        cell = fmt_cell(_values(s_recs, method_label=a, arch=pair["student"], pair=None))
        rows.append([f"Student {pair['student']} ({a})"] + [cell] * len(teacher_labels))
    means: dict[str, list[float]] = {t: [] for t in teacher_labels}
    for m in distill_labels:
        recs = [r for r in s_recs if r.get("pair") == pair["key"] and r["method_label"] == m]
        b = _mean(recs, teacher_label=base)
        row = [m]
        for t in teacher_labels:
            mu = _mean(recs, teacher_label=t)
            means[t].append(mu)
            row.append(fmt_cell(_values(recs, teacher_label=t)) + (_delta(mu, b) if t != base else ""))
        rows.append(row)
    if distill_labels:
        def agg(fn, t):
            xs = [x for x in means[t] if not math.isnan(x)]
            return f"{fn(xs):.2f}" if xs else "-"
        best = {t: agg(max, t) for t in teacher_labels}
        avg = {t: agg(lambda xs: sum(xs) / len(xs), t) for t in teacher_labels}
        rows.append(["**Best**"] + [best[t] for t in teacher_labels])
        rows.append(["**Average**"] + [avg[t] for t in teacher_labels])
    return markdown_table(header, rows)


TEACHER_QUALITY = [("top1", "top-1", 2), ("ece", "ECE", 2), ("nll", "NLL", 3), ("ece_ts", "ECE (TS)", 2),
                   ("nll_ts", "NLL (TS)", 3), ("temperature", "T", 2), ("pstar_l1_train", "L1 to p* (train)", 3),
                   ("pstar_l1_test", "L1 to p* (test)", 3)]


def teacher_quality_table(records: list[dict], pair: dict, teacher_labels: list[str]) -> str:
    t_recs = _teachers_of(records, pair)
    cols = [(k, name, d) for k, name, d in TEACHER_QUALITY if any(k in r for r in t_recs)]
    rows = [[t] + [fmt_cell(_values(t_recs, k, teacher_label=t), d) for k, _, d in cols] for t in teacher_labels]
    return markdown_table(["teacher method"] + [name for _, name, _ in cols], rows)


def fidelity_table(records: list[dict], pair: dict, teacher_labels: list[str], distill_labels: list[str]) -> str:
    recs = [r for r in records if r["kind"] == "student" and r.get("pair") == pair["key"]]
    rows = []
    for m in distill_labels:
        for t in teacher_labels:
            sel = dict(method_label=m, teacher_label=t)
            rows.append([m, t, fmt_cell(_values(recs, "agreement", **sel)),
                         fmt_cell(_values(recs, "kl_teacher_student", **sel), 3),
                         fmt_cell(_values(recs, "cka_teacher_student", **sel), 3)])
    return markdown_table(["method", "teacher", "agreement %", "KL(teacher ‖ student)", "linear CKA"], rows)


def study_tables(records: list[dict], pairs: list[dict], teacher_labels: list[str], alone_labels: list[str],
                 distill_labels: list[str], caption: str) -> str:
    out = [caption]
    for pair in pairs:
        via = f" -> {pair['assistant']}" if pair.get("assistant") else ""
        out.append(f"### {pair['teacher']}{via} -> {pair['student']}")
        out.append("Test top-1 % (mean ± std over seeds, n runs); in parentheses the difference to the "
                   f"{teacher_labels[0]} teacher.\n\n" +
                   distillation_table(records, pair, teacher_labels, alone_labels, distill_labels))
        out.append("Teacher quality\n\n" + teacher_quality_table(records, pair, teacher_labels))
        if distill_labels:
            out.append("Student fidelity and similarity to its teacher (test set)\n\n" +
                       fidelity_table(records, pair, teacher_labels, distill_labels))
    return "\n\n".join(out)
