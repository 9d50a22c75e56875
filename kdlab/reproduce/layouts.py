"""Tables in a paper's layout: its rows and columns, each cell the paper's value beside kdlab's.

A layout is the published table (rows, columns, values) plus a function that finds kdlab's result for one
(row key, column key) in the records of the studies that ran.  Keys follow the transcription
(``kdlab/reproduce/published/*.yaml``): a column is ``<paper pair>.<part>[.<metric>]``, e.g.
``wrn_40_2-wrn_16_2.sftn`` or ``imagenet_resnet34-imagenet_resnet18.student.top5``.  Paper pairs are mapped to the
study's pairs by position, so a shrunk study (other architectures) still fills the paper's table.

Cells hold :class:`~kdlab.analysis.document.Compare`: the paper's value (± std where printed), kdlab's mean ± std (n)
over seeds and the difference.  Differences between two columns (the papers' Δ) are computed per seed (same seed,
same data) and shown as their mean with a 95 % t interval, marked n.s. when it covers 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kdlab.analysis.document import Compare, Difference, Stat, Table
from kdlab.analysis.stats import MIN_PAIRS, NOT_SIGNIFICANT
from kdlab.config import StudyConfig
from kdlab.reproduce.published import PublishedTable
from kdlab.study.plan import arch_label, pair_label

Cell = Callable[[str, str], Stat | None]


@dataclass
class PartResult:
    """One study of an experiment as it ran: its config and the records of its finished runs."""

    config: StudyConfig
    records: list[Any]  # RunRecord
    paper_pairs: tuple[str, ...] = ()  # the paper's pair keys, in the order of the config's pairs
    metric_alias: dict[str, str] = field(default_factory=dict)  # e.g. top1 -> best_top1 (the best-epoch table)
    labels: dict[str, str] = field(default_factory=dict)  # the table's method label -> the runs' (--as-written)

    def pair(self, paper_pair: str) -> tuple[str, str, str]:
        """(plan pair key, teacher architecture, student architecture) of a paper pair."""
        pairs = self.config.pair_list()
        try:
            p = pairs[self.paper_pairs.index(paper_pair)]
        except (ValueError, IndexError):
            raise KeyError(f"pair {paper_pair!r} is not one of {self.paper_pairs}") from None
        return pair_label(p), arch_label(p.teacher), arch_label(p.student)

    # -- values per seed ------------------------------------------------------------------------------------
    def _by_seed(self, metric: str, match: dict[str, Any]) -> dict[int, float]:
        metric = self.metric_alias.get(metric, metric)
        out = {}
        for r in self.records:
            if all(r.get(k) == v for k, v in match.items()):
                v = r.get(metric)
                if isinstance(v, int | float) and not math.isnan(float(v)):
                    out[r.seed] = float(v)
        return out

    def student(self, paper_pair: str, teacher: str, method: str, metric: str = "top1") -> dict[int, float]:
        key, _, _ = self.pair(paper_pair)
        return self._by_seed(metric, {"kind": "student", "pair": key,
                                      "teacher_label": self.labels.get(teacher, teacher),
                                      "method_label": self.labels.get(method, method)})

    def alone(self, paper_pair: str, method: str = "none", metric: str = "top1") -> dict[int, float]:
        _, _, s_arch = self.pair(paper_pair)
        return self._by_seed(metric, {"kind": "student", "pair": None, "arch": s_arch,
                                      "method_label": self.labels.get(method, method)})

    def teacher(self, paper_pair: str, teacher: str, metric: str = "top1") -> dict[int, float]:
        key, t_arch, _ = self.pair(paper_pair)
        teacher = self.labels.get(teacher, teacher)
        own = self._by_seed(metric, {"kind": "teacher", "arch": t_arch, "teacher_label": teacher, "pair": key})
        own = own or self._by_seed(metric, {"kind": "teacher", "arch": t_arch, "teacher_label": teacher,
                                            "pair": None})
        pub = self.config.teacher.published
        if own or metric != "top1" or pub is None or pub.label != teacher:
            return own
        # a published teacher has no run: each of its students measured it (teacher_top1, the same file)
        return self._by_seed("teacher_top1", {"kind": "student", "pair": key, "teacher_label": teacher})


def stat(values: dict[int, float] | Iterable[float], digits: int = 2, scale: float = 1.0) -> Stat:
    vals = values.values() if isinstance(values, dict) else values
    return Stat.of([v * scale for v in vals], digits)


def paired_difference(a: dict[int, float], b: dict[int, float], digits: int = 2) -> Difference:
    """a - b over the seeds both have: the paired difference, its mean with a 95 % t interval and the
    not-significant mark (:class:`~kdlab.analysis.document.Difference`)."""
    return Difference.of([a[s] - b[s] for s in sorted(set(a) & set(b))], digits)


def per_seed(rows: list[dict[int, float]], combine: Callable[[list[float]], float]) -> dict[int, float]:
    """Combine several rows seed by seed (e.g. the best or the average method), over the seeds all rows have."""
    rows = [r for r in rows if r]
    if not rows:
        return {}
    seeds = set.intersection(*(set(r) for r in rows))
    return {s: combine([r[s] for r in rows]) for s in sorted(seeds)}


def best_by_mean(rows: list[dict[int, float]]) -> dict[int, float]:
    """The row with the highest mean (the papers' "Best": the best method of a column)."""
    rows = [r for r in rows if r]
    return max(rows, key=lambda r: sum(r.values()) / len(r)) if rows else {}


def paper_layout(table: PublishedTable, cell: Cell, digits: int = 2, title: str = "", note: str = "") -> Table:
    """The published table with a :class:`Compare` in every cell the paper prints (and kdlab's value alone in
    cells the paper leaves empty, when kdlab has one)."""
    header = [""] + [c.label for c in table.columns]
    rows = []
    for r in table.rows:
        line: list[Any] = [r.label]
        for c in table.columns:
            ours = cell(r.key, c.key) or Stat.of([], digits)
            pub = table.value(r.key, c.key)
            if pub is None and ours.n == 0:
                line.append("-")
            else:
                line.append(Compare(pub.mean if pub else None, pub.std if pub else None, ours))
        rows.append(line)
    legend = "Each cell: paper / kdlab mean ± std (n runs) (kdlab - paper)."
    if any(isinstance(c, Compare) and isinstance(c.ours, Difference) for r in rows for c in r):
        legend += (" A difference between two of kdlab's columns is paired over seeds: mean [95 % t interval] "
                   f"(n seeds), {NOT_SIGNIFICANT} when the interval covers 0 (no interval from fewer than "
                   f"{MIN_PAIRS} seeds).")
    return Table(header, rows, title=title, note=" ".join(x for x in (legend, note) if x))


def split(col: str) -> tuple[str, str, str | None]:
    """``pair.part[.metric]`` -> (pair, part, metric or None)."""
    parts = col.split(".")
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else None
