"""Is a student bounded by its teacher's accuracy or by its teacher's distance to p*?  (SoTeacher's claim.)

Over the distilled students of one method (default: the trajectory's, else ``kd``) and their trajectory variants
(``<method>@<epoch>``, distilled from teacher checkpoints), the Spearman correlation of the student's test top-1
with each of its teacher's measures, recorded in the student's summary (``teacher_*``; for a checkpoint student
the checkpoint's), with a percentile bootstrap CI over students.  Students of every teacher method (and teacher
sweep variant) are pooled: the spread of teachers is what the correlation is about.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdlab.analysis.curves import plain_teacher_labels
from kdlab.analysis.document import Table, Value
from kdlab.analysis.plotting import colour, legend, new_figure, save, suptitle, title
from kdlab.study.records import RunRecord

MEASURES = {"teacher_top1": "teacher test top-1 %", "teacher_pstar_l1_train": "teacher L1 to p* (training inputs)",
            "teacher_pstar_l1_test": "teacher L1 to p* (test inputs)", "teacher_ece": "teacher test ECE %"}
# a student counts when its summary holds its teacher's own measures (top-1 alone was recorded before them)
REQUIRED = ("top1", "teacher_top1", "teacher_ece")
MIN_STUDENTS = 8
RESAMPLES = 2000
SEED = 0  # the bootstrap's: a report rebuilt from the same runs prints the same intervals


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def _pearson_centred(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation of two centred vectors; nan when either is constant."""
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(np.clip(a @ b / denom, -1.0, 1.0)) if denom > 1e-12 else math.nan


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks; nan when either side is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    return _pearson_centred(rx - rx.mean(), ry - ry.mean())


def partial_spearman(x, y, z) -> float:
    """Spearman's rho of x and y with z held fixed: Pearson's correlation of the ranks of x and of y, each with its
    least-squares line on the ranks of z taken out (nan when a residual is constant)."""
    rz = average_ranks(z)
    a = np.c_[np.ones_like(rz), rz]

    def resid(v):
        rv = average_ranks(v)
        return rv - a @ np.linalg.lstsq(a, rv, rcond=None)[0]

    return _pearson_centred(resid(x), resid(y))  # least-squares residuals with an intercept are centred


def bootstrap_ci(x, y, resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95, z=None
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of rho (with ``z``: of the partial rho given z), resampling the students with
    replacement; resamples whose rho is undefined (one side constant) are left out."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    if z is None:
        rhos = np.array([spearman(x[i], y[i]) for i in idx])
    else:
        z = np.asarray(z, dtype=float)
        rhos = np.array([partial_spearman(x[i], y[i], z[i]) for i in idx])
    rhos = rhos[~np.isnan(rhos)]
    if not len(rhos):
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(rhos, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Correlation:
    measure: str
    rho: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        if math.isnan(self.rho):
            return f"rho - (n={self.n})"
        return f"rho = {self.rho:.2f} [{self.low:.2f}, {self.high:.2f}], n={self.n}"


def correlate(measure: str, xs, ys, given=None) -> Correlation:
    """rho of ys with xs (``given``: the partial rho with those values held fixed) and its bootstrap interval."""
    if len(xs) < 3 + (given is not None):  # two points are always perfectly ranked
        return Correlation(measure, math.nan, math.nan, math.nan, len(xs))
    rho = spearman(xs, ys) if given is None else partial_spearman(xs, ys, given)
    return Correlation(measure, rho, *bootstrap_ci(xs, ys, z=given), len(xs))


def distill_method(records: list[RunRecord]) -> str:
    """The trajectory's distillation method label, else ``kd``."""
    return next((r.sweep_base for r in records if r.trajectory_epoch is not None and r.sweep_base), "kd")


def distilled_students(records: list[RunRecord], method: str | None = None) -> list[RunRecord]:
    """The students of ``method`` (and its trajectory variants) with a teacher whose measures they record."""
    method = method or distill_method(records)
    out = [r for r in records if r.kind == "student" and r.teacher_run_dir is not None
           and (r.method_label == method or (r.trajectory_epoch is not None and r.sweep_base == method))
           and all(r.get(k) is not None for k in REQUIRED)]
    # a checkpoint at the teacher's last epoch is the teacher itself: counted once, by its plain student (studies
    # planned before the plain student was that point hold both)
    last = {r.run_dir: r.get("epochs") for r in records if r.kind == "teacher"}
    plain = {r.teacher_run_dir for r in out if not r.from_checkpoint}
    return [r for r in out if not r.from_checkpoint or r.teacher_run_dir not in plain
            or r.trajectory_epoch != last.get(r.teacher_run_dir)]


def correlations(records: list[RunRecord], method: str | None = None) -> list[Correlation]:
    """Per teacher measure, rho of student top-1 against it over the students that record it."""
    return _correlations(distilled_students(records, method))


def _correlations(students: list[RunRecord]) -> list[Correlation]:
    out = []
    for key in MEASURES:
        pairs = [(r.get(key), r.get("top1")) for r in students if r.get(key) is not None]
        out.append(correlate(key, [x for x, _ in pairs], [y for _, y in pairs]))
    return out


PARTIAL = [("teacher_pstar_l1_train", "teacher_top1", "teacher L1 to p* (training inputs), accuracy held fixed"),
           ("teacher_top1", "teacher_pstar_l1_train", "teacher test top-1 %, L1 to p* (training) held fixed")]


def _cell(c: Correlation) -> str:
    return "-" if math.isnan(c.rho) else f"{c.rho:.2f} [{c.low:.2f}, {c.high:.2f}] (n={c.n})"


def partial_correlations(students: list[RunRecord]) -> list[Correlation]:
    """Per row of ``PARTIAL``: rho of student top-1 with one teacher measure, the other held fixed."""
    out = []
    for key, given, _ in PARTIAL:
        pts = [r for r in students if r.get(key) is not None and r.get(given) is not None]
        out.append(correlate(key, [r.get(key) for r in pts], [r.get("top1") for r in pts],
                             given=[r.get(given) for r in pts]))
    return out


def correlation_table(records: list[RunRecord], method: str | None = None) -> Table | None:
    """The correlations as a table, or None with fewer than ``MIN_STUDENTS`` students: over all students, and
    over the students of trained teachers only (no checkpoints: the spread of teacher methods and seeds alone);
    then the partial correlations, each measure with the other held fixed."""
    method = method or distill_method(records)
    students = distilled_students(records, method)
    if len(students) < MIN_STUDENTS:
        return None
    checkpoints = sum(r.from_checkpoint for r in students)
    final = [r for r in students if not r.from_checkpoint]
    final_corr = {c.measure: c for c in _correlations(final)}
    # without checkpoint students, the column of trained teachers only would repeat the others
    extra = (lambda c: [_cell(c)]) if checkpoints else (lambda c: [])  # noqa: E731
    rows = [[MEASURES[c.measure], Value(c.rho), Value(c.low), Value(c.high), str(c.n), *extra(final_corr[c.measure])]
            for c in correlations(records, method) if c.n]
    for (_, _, name), c, f in zip(PARTIAL, partial_correlations(students), partial_correlations(final)):
        if c.n:
            rows.append([name, Value(c.rho), Value(c.low), Value(c.high), str(c.n), *extra(f)])
    note = (f"95% percentile bootstrap intervals over students ({RESAMPLES} resamples, seed {SEED}). "
            "A student bounded by its teacher's distance to p* has a negative rho with the L1 distances (SoTeacher).")
    if not has_pstar(students):
        note = f"{NO_PSTAR} {note}"
    return Table(["teacher measure", "Spearman rho", "CI low", "CI high", "n",
                  *(["trained teachers only: rho [CI] (n)"] if checkpoints else [])], rows,
                 title=f"Spearman correlation of the {method} student's test top-1 with its teacher's measures "
                       f"({len(students)} students, {checkpoints} of them distilled from teacher checkpoints)",
                 note=note)


NO_PSTAR = ("The teachers' distance to p* (its rows, the partial correlations and the figure's right panel) is left "
            "out: the data have no known p* (real images); kdlab's mixed-feature data have one.")


def has_pstar(students: list[RunRecord]) -> bool:
    return any(r.get("teacher_pstar_l1_train") is not None for r in students)


def _teacher(r: RunRecord) -> str:
    return (r.teacher_label or "").split("@")[0]


def _panel(ax, students: list[RunRecord], key: str, colours: dict[str, str], method: str) -> None:
    pts = [r for r in students if r.get(key) is not None]
    for lbl, c in colours.items():
        for ckpt in (False, True):
            mine = [r for r in pts if _teacher(r) == lbl and r.from_checkpoint == ckpt]
            if mine:
                ax.scatter([r.get(key) for r in mine], [r.get("top1") for r in mine], s=24, edgecolors=c,
                           facecolors="none" if ckpt else c, label=None if ckpt else lbl)
    if any(r.from_checkpoint for r in pts):
        ax.scatter([], [], s=24, facecolors="none", edgecolors="0.3", label="hollow: teacher checkpoint")
    ax.set(xlabel=MEASURES[key], ylabel=f"{method} student test top-1 (%)")
    c = correlate(key, [r.get(key) for r in pts], [r.get("top1") for r in pts])
    title(ax, f"student vs {MEASURES[key]}\n{c.text()}")


def plot_teacher_quality(records: list[RunRecord], out_path: str | Path, method: str | None = None) -> Path | None:
    """Student top-1 against its teacher's test top-1 (left) and L1 to p* on training inputs (right; left out on data
    without p*), one point per student; None with fewer than ``MIN_STUDENTS`` students."""
    method = method or distill_method(records)
    students = distilled_students(records, method)
    if len(students) < MIN_STUDENTS:
        return None
    labels = list(dict.fromkeys(plain_teacher_labels(records) + [_teacher(r) for r in students]))
    colours = {t: colour(i) for i, t in enumerate(labels) if any(_teacher(r) == t for r in students)}
    keys = ("teacher_top1", "teacher_pstar_l1_train") if has_pstar(students) else ("teacher_top1",)
    fig, axes = new_figure(1, len(keys), width=5.4, height=3.8)
    for ax, key in zip(axes[0], keys):
        _panel(ax, students, key, colours, method)
    legend(axes[0][-1], loc="center left", bbox_to_anchor=(1.02, 0.5))  # one legend, off the points
    suptitle(fig, f"Teacher quality and the {method} student: Spearman rho [95% bootstrap CI] over students")
    return save(fig, out_path)


__all__ = ["Correlation", "average_ranks", "bootstrap_ci", "correlation_table", "correlations", "distill_method",
           "distilled_students", "partial_correlations", "partial_spearman", "plot_teacher_quality", "spearman"]
