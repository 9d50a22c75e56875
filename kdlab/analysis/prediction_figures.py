"""Figures from the runs' predictions: reliability diagrams and the deviation scatter (Nagarajan et al. 2023).

By default both use the runs' saved test predictions.  The deviation scatter can show the training points instead
(``split="train"``, the points the models fitted): those predictions are not saved by training, so each run's final
checkpoint predicts its training points once, on the data set rebuilt from its config, and the run folder keeps
the result (:func:`kdlab.runs.train_true_label_prob`).

The seeds' predictions are pooled (every seed predicts the same points), so a diagram or scatter shows all
n_seeds x n_points predictions; the titles say which seeds were pooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdlab.analysis import curves
from kdlab.analysis.plotting import (
    blank,
    blank_figure,
    figure_legend,
    new_figure,
    save,
    seed_list,
    small_axes,
    suptitle,
    title,
)
from kdlab.core.metrics import ece, reliability_bins
from kdlab.study.records import RunRecord, StudyDataError, read_predictions

BINS = 15  # the papers' equal-width confidence bins (Guo et al. 2017, On Calibration of Modern Neural Networks)
SPLITS = {"test": "test example", "train": "training point"}  # what a point of the scatter is


def _pooled(recs: list[RunRecord]) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    got = [(r.seed, read_predictions(r.run_dir)) for r in sorted(recs, key=lambda r: r.seed)]
    got = [(s, p) for s, p in got if p is not None]
    if not got:
        return None
    return (np.concatenate([p[0] for _, p in got]), np.concatenate([p[1] for _, p in got]), [s for s, _ in got])


def _reliability_rows(records: list[RunRecord]) -> list[list[tuple[str, list[RunRecord]]]]:
    """Rows of (panel title, runs pooled in it), one column per teacher method: per pair its teachers (a set of
    teacher runs already shown for another pair is left empty), then per distillation method its students; last
    the students trained without a teacher."""
    teachers = curves.plain_teacher_labels(records)
    distill, alone = curves.plain_student_labels(records)
    pairs = curves.pairs_of(records)
    shared = lambda p: sum(q.teacher == p.teacher for q in pairs) > 1
    teacher_rows = [[(f"{t} teacher {p.teacher}" + (f"\n(pair with {p.student})" if shared(p) else ""),
                      curves.teacher_records(records, p, t)) for t in teachers] for p in pairs]
    if not pairs:  # no distilled students: the teachers by architecture
        archs = dict.fromkeys(r.arch for r in records if r.kind == "teacher")
        teacher_rows = [[(f"{t} teacher {a}", [r for r in records if r.kind == "teacher" and r.arch == a
                                               and r.teacher_label == t]) for t in teachers] for a in archs]
    rows, seen = [], set()
    for i, row in enumerate(teacher_rows):
        keys = [frozenset(r.run_dir for r in recs) for _, recs in row]
        rows.append([(name, recs if k not in seen else []) for (name, recs), k in zip(row, keys)])
        seen.update(keys)
        if i < len(pairs):
            p = pairs[i]
            rows += [[(f"{m} student {p.student}\nfrom {t} teacher",
                       curves.students(records, p, method_label=m, teacher_label=t)) for t in teachers]
                     for m in distill]
    variants = curves.teacher_variants(records)
    for arch in dict.fromkeys(r.arch for r in records if r.kind == "student" and r.pair is None):
        rows.append([(f"{a} student {arch} (no teacher)",
                      [r for r in records if r.kind == "student" and r.pair is None and r.arch == arch
                       and r.method_label == a and curves.is_plain_student(r, variants)]) for a in alone])
    return [row for row in rows if any(recs for _, recs in row)]


def _count_text(n: int) -> str:
    return str(n) if n < 10_000 else f"{n / 1000:.0f}k"  # five characters at most: the width of a bin


def _reliability_panel(ax, strip, name: str, logits: np.ndarray, labels: np.ndarray, seeds: list[int],
                       bins: int) -> None:
    """Accuracy per confidence bin above, the number of predictions per bin below it (a bar and its count), so
    that a bin of three predictions is not read like one of three thousand."""
    edges = np.linspace(0, 1, bins + 1)
    z, y = torch.from_numpy(logits).float(), torch.from_numpy(labels).long()
    rb = reliability_bins(z, y, bins)
    count = np.array(rb["count"])
    full = count > 0
    ax.bar(edges[:-1][full], np.array(rb["accuracy"])[full], width=1 / bins, align="edge", color="#1f77b4",
           edgecolor="white", label="accuracy of the bin")
    ax.plot(np.array(rb["confidence"])[full], np.array(rb["accuracy"])[full], "o", color="#d62728",
            markersize=3, label="(mean confidence, accuracy) of the bin")
    ax.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    ax.tick_params(labelbottom=False)
    title(ax, f"{name}\nECE {ece(z, y, bins):.2f}%, seeds {seed_list(seeds)}, {len(y)} predictions", 8)
    strip.bar(edges[:-1][full], count[full], width=1 / bins, align="edge", color="0.8", edgecolor="white",
              label="predictions in the bin (count, log scale)")
    for left, n in zip(edges[:-1][full], count[full]):
        strip.text(left + 0.5 / bins, 0.96, _count_text(int(n)), transform=strip.get_xaxis_transform(),
                   rotation=90, ha="center", va="top", fontsize=6)
    # log scale: a bin of a few predictions still shows beside one of thousands; the top third holds the counts
    strip.set_yscale("log")
    strip.set(xlim=(0, 1), ylim=(0.7, count.max() ** 1.5 * 2), xlabel="confidence (max softmax probability)",
              ylabel="count")
    strip.set_yticks([])
    strip.minorticks_off()
    small_axes(strip)


def plot_reliability(records: list[RunRecord], out_path: str | Path, bins: int = BINS) -> Path | None:
    panels = [[(name, _pooled(recs) if recs else None) for name, recs in row] for row in _reliability_rows(records)]
    panels = [row for row in panels if any(p is not None for _, p in row)]
    if not panels:
        return None
    nrows, ncols = len(panels), max(len(r) for r in panels)
    fig = blank_figure(3.4 * ncols, 4.4 * nrows + 0.5)
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3.2, 1] * nrows)
    for i, row in enumerate(panels):
        for j in range(ncols):
            ax = fig.add_subplot(grid[2 * i, j])
            strip = fig.add_subplot(grid[2 * i + 1, j], sharex=ax)
            if j >= len(row) or row[j][1] is None:
                blank(ax)
                blank(strip)
                continue
            name, (logits, labels, seeds) = row[j]
            _reliability_panel(ax, strip, name, logits, labels, seeds, bins)
    figure_legend(fig)
    suptitle(fig, f"Reliability diagrams ({bins} equal-width confidence bins; test predictions pooled over seeds; "
                  "below each, the number of predictions per bin)")
    return save(fig, out_path)


def true_label_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    return p[np.arange(len(labels)), labels]


def _true_label_probs(rec: RunRecord, split: str) -> tuple[np.ndarray, np.ndarray, str | None] | None:
    """(probability of the true label, label, which points) of a run on ``split``, or None without predictions."""
    if split == "test":
        got = read_predictions(rec.run_dir)
        return None if got is None else (true_label_prob(*got), got[1], None)
    from kdlab.runs.evaluate import train_true_label_prob

    return train_true_label_prob(rec.run_dir)


def _matched(teacher: list[RunRecord], student: list[RunRecord], split: str
             ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Teacher and student probability of the true label, pooled over the seeds both have."""
    t_by_seed = {r.seed: r for r in teacher}
    xs, ys, seeds = [], [], []
    for s in sorted(student, key=lambda r: r.seed):
        t = t_by_seed.get(s.seed)
        pt, ps = (_true_label_probs(t, split) if t else None), _true_label_probs(s, split)
        if pt is None or ps is None:
            continue
        if pt[2] != ps[2] or not np.array_equal(pt[1], ps[1]):
            if split == "train":
                # the study gives a seed's runs the same data and hold-out: other points mean run folders of
                # other settings, and a point-by-point comparison would be meaningless
                raise StudyDataError(f"deviation: teacher {t.run_dir} and student {s.run_dir} were not trained on "
                                     "the same points")
            continue  # test predictions of different test sets are left out
        xs.append(pt[0])
        ys.append(ps[0])
        seeds.append(s.seed)
    if not seeds:
        return np.empty(0), np.empty(0), []
    return np.concatenate(xs), np.concatenate(ys), seeds


def _binned_mean(x: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    idx = np.clip((x * bins).astype(int), 0, bins - 1)
    keep = [b for b in range(bins) if (idx == b).any()]
    return np.array([x[idx == b].mean() for b in keep]), np.array([y[idx == b].mean() for b in keep])


@dataclass(frozen=True)
class DeviationPanel:
    """One panel of the deviation figure: per point (pooled over ``seeds``) the teacher's probability of the true
    label ``x`` and the distilled student's ``y``; ``x_alone``/``y_alone`` the same for the student trained alone
    (over ``seeds_alone``, empty without one)."""

    pair: curves.Pair
    method: str
    x: np.ndarray
    y: np.ndarray
    seeds: list[int]
    alone: str | None
    x_alone: np.ndarray
    y_alone: np.ndarray
    seeds_alone: list[int]


def deviation_points(records: list[RunRecord], teacher: str | None = None, split: str = "test"
                     ) -> tuple[str | None, list[DeviationPanel]]:
    """The deviation data of one teacher method (default: the baseline, the first) and its panels, one per pair
    and distillation method."""
    if split not in SPLITS:
        raise StudyDataError(f"deviation: split {split!r} is not one of {', '.join(SPLITS)}")
    labels = curves.plain_teacher_labels(records)
    if teacher is not None and teacher not in labels:
        raise StudyDataError(f"deviation: no teacher method {teacher!r} in the study (teacher methods: "
                             f"{', '.join(labels) or 'none finished'})")
    teacher = teacher or (labels[0] if labels else None)
    distill, alone = curves.plain_student_labels(records)
    panels = []
    for p in curves.pairs_of(records):
        t_recs = curves.teacher_records(records, p, teacher)
        no_teacher = curves.Pair(None, None, p.student)
        alone_name, alone_recs = next(((a, v) for a in alone
                                       if (v := curves.students(records, no_teacher, method_label=a))), (None, []))
        students = {m: curves.students(records, p, method_label=m, teacher_label=teacher) for m in distill}
        if not any(students.values()):
            continue  # no need to predict the reference for a pair without the teacher's students
        ref = _matched(t_recs, alone_recs, split)
        for m, recs in students.items():
            x, y, seeds = _matched(t_recs, recs, split)
            if seeds:
                panels.append(DeviationPanel(p, m, x, y, seeds, alone_name, *ref))
    return teacher, panels


def _deviation_panel(ax, teacher: str, d: DeviationPanel, split: str) -> None:
    ax.scatter(d.x, d.y, s=5, alpha=0.35, color="#1f77b4", linewidths=0, rasterized=True,
               label="distilled student")
    if d.seeds_alone:
        ax.scatter(d.x_alone, d.y_alone, s=5, alpha=0.35, color="#ff7f0e", linewidths=0, rasterized=True,
                   label=f"{d.alone} student (no teacher)")
        ax.plot(*_binned_mean(d.x_alone, d.y_alone), "-", color="#c45a00", linewidth=2,
                label="no teacher: binned mean")
    ax.plot(*_binned_mean(d.x, d.y), "-", color="#0b3c6e", linewidth=2, label="distilled: binned mean")
    ax.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1, label="student = teacher")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="teacher: p(true label)", ylabel="student: p(true label)")
    title(ax, f"{d.method} student from the {teacher} teacher\n{d.pair.title}\n{SPLITS[split]}s of seeds "
              f"{seed_list(d.seeds)}", 8)


def plot_deviation(records: list[RunRecord], out_path: str | Path, teacher: str | None = None,
                   split: str = "test") -> Path | None:
    """Per test example (``split="train"``: per training point), the teacher's probability of the true label (x)
    against the student's (y), for the students distilled from each teacher method (``teacher``: that one only)
    and for the student alone: a column per teacher method, a row per pair and distillation method."""
    chosen = [teacher] if teacher is not None else curves.plain_teacher_labels(records) or [None]
    cells: dict[tuple, dict[str, DeviationPanel]] = {}
    for t in chosen:
        label, panels = deviation_points(records, t, split)
        for d in panels:
            cells.setdefault((d.pair.key, d.method), {})[label] = d
    if not cells:
        return None
    columns = [t for t in (chosen if teacher is not None else curves.plain_teacher_labels(records))
               if any(t in row for row in cells.values())]
    if len(columns) == 1:  # one teacher method: its panels in rows of three
        flat_cells = [(columns[0], row[columns[0]]) for row in cells.values()]
        ncols = min(3, len(flat_cells))
        grid = [flat_cells[i:i + ncols] for i in range(0, len(flat_cells), ncols)]
    else:
        ncols = len(columns)
        grid = [[(t, row.get(t)) for t in columns] for row in cells.values()]
    # taller than wide: the titles' lines above a panel of about equal sides (both axes are a probability)
    fig, axes = new_figure(len(grid), ncols, width=3.6, height=4.3)
    for row, ax_row in zip(grid, axes):
        for j, ax in enumerate(ax_row):
            if j >= len(row) or row[j][1] is None:
                blank(ax)
                continue
            _deviation_panel(ax, row[j][0], row[j][1], split)
    figure_legend(fig, markerscale=2.5)
    suptitle(fig, f"Student-teacher deviations: probability of the true label per {SPLITS[split]}, teacher (x) "
                  "against student (y), pooled over seeds; lines are means over 10 bins of x")
    return save(fig, out_path)
