"""A study's figures as PNG files, computed from its records and run folders only (no training, and no data set
but for the deviation figure of the training points, ``split="train"``).

=================  =======================================================  =======================================
name               what it shows                                            what the study needs
=================  =======================================================  =======================================
trajectory         teacher test top-1 and training loss per epoch, and the  ``trajectory:`` (teacher ``save_every``)
                   student distilled from each saved checkpoint (seed 000
                   Fig. 1), one line per teacher method
sweeps             teacher and student top-1 against a swept                ``sweeps:`` over a parameter other than
                   hyper-parameter (seed 004 App. Fig. 1; seed 002 Tables   ``switch_epoch``
                   5-6)
reliability        accuracy against confidence in 15 bins, test             any finished run
                   predictions pooled over seeds, ECE in the title
deviation          per test example (``split="train"``: per training        a teacher method, its distilled students
                   point), teacher vs student probability of the true       (and a student alone)
                   label, distilled student and student alone (seed 003)
late-distillation  student top-1 against the epoch where distillation       a student sweep over ``switch_epoch``
                   starts (seed 003)
teacher-quality    student top-1 against its teacher's test top-1 and its   at least 8 distilled students (of the
                   teacher's L1 distance to p* on training inputs, one      trajectory's method, else ``kd``) with
                   point per student, Spearman rho [bootstrap CI]           their teachers' measures
=================  =======================================================  =======================================

Each ``plot_<name>(records, out_path)`` returns the written path, or None when the study has no data for it;
:func:`write_figures` writes all that apply into ``<study>/figures/``.  Every panel shows mean ± std over seeds
(a band, or error bars on categorical axes) and says how many seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import curves
from .correlation import plot_teacher_quality
from .figure_names import FIGURE_HELP, FIGURE_NEEDS
from .plotting import (
    band,
    blank,
    categorical_order,
    colour,
    hline,
    integer_x,
    legend,
    n_seeds,
    new_figure,
    save,
    set_x_axis,
    suptitle,
    title,
    x_positions,
)
from .prediction_figures import plot_deviation, plot_reliability
from .records import RunRecord, StudyDataError, load_study
from .scaling import plot_scaling


def _teacher_colours(records: list[RunRecord]) -> dict[str, str]:
    return {t: colour(i) for i, t in enumerate(curves.plain_teacher_labels(records))}


def plot_trajectory(records: list[RunRecord], out_path: str | Path) -> Path | None:
    trs = curves.trajectories(records)
    if not trs:
        return None
    colours = _teacher_colours(records)
    fig, axes = new_figure(len(trs), 3)
    for row, tr in zip(axes, trs):
        n = max(m.student.n for m in tr.methods)
        for m in tr.methods:
            c = colours.get(m.teacher_label, colour(len(colours)))
            band(row[0], m.teacher_top1, c, label=m.teacher_label)
            band(row[1], m.teacher_loss, c, label=f"{m.teacher_label} ({m.loss_key})")
            band(row[2], m.student, c, label=f"from {m.teacher_label} teacher")
        for i, (name, vals) in enumerate(tr.references.items()):
            hline(row[2], vals, "0.45", name, linestyle=["--", ":", "-."][i % 3])
        title(row[0], f"Teacher {tr.pair.teacher}: test accuracy ({n_seeds(n)})")
        title(row[1], f"Teacher {tr.pair.teacher}: training loss ({n_seeds(n)})")
        title(row[2], f"{tr.method} student {tr.pair.student} distilled from\nthe teacher's checkpoint at that "
              f"epoch ({n_seeds(n)})")
        row[0].set(xlabel="teacher epoch", ylabel="teacher test top-1 (%)")
        row[1].set(xlabel="teacher epoch", ylabel="training loss (mean per example)")
        row[2].set(xlabel="teacher checkpoint epoch", ylabel="student test top-1 (%)")
        losses = [v for m in tr.methods for v in m.teacher_loss.mean if v == v]
        if losses and min(losses) > 0 and max(losses) / min(losses) > 10:
            row[1].set_yscale("log")
        for ax in row:
            integer_x(ax)
            legend(ax)
    suptitle(fig, "Teacher trajectory: " + "; ".join(tr.pair.title for tr in trs) + " (mean ± std over seeds)")
    return save(fig, out_path)


def _sweep_panel(ax, sw: curves.Sweep, colours: dict[str, str], xlabel: str, heading: str) -> None:
    """Students on the left axis; a teacher sweep's teacher on a right axis of its own, so that a change of a
    few points stays visible next to students that are many points less accurate."""
    lines = ([sw.teacher] if sw.teacher is not None and sw.teacher.x else []) + sw.students
    order = categorical_order(lines)
    tax = ax.twinx() if lines and lines[0] is sw.teacher else None
    for i, s in enumerate(lines):
        is_teacher = s is sw.teacher
        target, c = (tax, "black") if is_teacher else (ax, colours.get(s.key) or colour(i))
        band(target, s, c, order, marker="s" if is_teacher else "o", linestyle="--" if is_teacher else "-",
             label=f"{sw.base} teacher (right axis)" if is_teacher else None)
        if sw.base_value in s.x:  # the configuration the tables report (the seed figure's triangle)
            x = x_positions([sw.base_value], order)[0]
            target.plot([x], [s.mean[s.x.index(sw.base_value)]], marker="^", markersize=10, color=c,
                        linestyle="none")
        for name, vals in sw.references.items():
            if name.startswith(s.label + " ("):
                hline(target, vals, c, name, linestyle=":")
    for name, vals in sw.references.items():
        if not any(name.startswith(s.label + " (") for s in lines):
            hline(ax, vals, "0.45", name)
    set_x_axis(ax, lines, order, xlabel)
    if order is None and all(isinstance(x, int) for s in lines for x in s.x):
        integer_x(ax)
    ax.set(ylabel="student test top-1 (%)")
    title(ax, f"{heading}\n{sw.pair.title}\n({n_seeds(len(sw.seeds))}; ▲ the configuration of the tables)")
    if tax is not None:
        tax.set_ylabel("teacher test top-1 (%), dashed")
        handles = [h for a in (ax, tax) for h in zip(*a.get_legend_handles_labels())]
        ax.legend([h for h, _ in handles], [lbl for _, lbl in handles], fontsize=7)
    else:
        legend(ax)


def _sweep_figure(panels: list[curves.Sweep], out_path, colours, xlabel, panel_title, heading) -> Path:
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(nrows, ncols, width=4.6, height=3.6)
    flat = [ax for row in axes for ax in row]
    for ax, sw in zip(flat, panels):
        _sweep_panel(ax, sw, colours, xlabel(sw), panel_title(sw))
    for ax in flat[len(panels):]:
        blank(ax)
    suptitle(fig, heading)
    return save(fig, out_path)


def plot_sweeps(records: list[RunRecord], out_path: str | Path) -> Path | None:
    panels = curves.sweeps(records)
    if not panels:
        return None
    return _sweep_figure(
        panels, out_path, _teacher_colours(records), lambda sw: f"{sw.base}: {sw.param}",
        lambda sw: f"{sw.role} method {sw.base}: {sw.param}" + (" (teacher and its students)"
                                                                 if sw.role == "teacher" else ""),
        "Hyper-parameter effects: test top-1 against the swept value (mean ± std over seeds)")


def plot_late_distillation(records: list[RunRecord], out_path: str | Path) -> Path | None:
    panels = curves.sweeps(records, late=True)
    if not panels:
        return None
    return _sweep_figure(
        panels, out_path, _teacher_colours(records),
        lambda sw: f"{curves.LATE_PARAM}: first epoch of distillation\n(cross-entropy only before it)",
        lambda sw: f"Late distillation ({sw.base})",
        "Late distillation: student top-1 against the switch epoch (mean ± std over seeds)")


FIGURES: dict[str, Callable[..., Path | None]] = {
    "trajectory": plot_trajectory, "sweeps": plot_sweeps, "reliability": plot_reliability,
    "deviation": plot_deviation, "late-distillation": plot_late_distillation, "scaling": plot_scaling,
    "teacher-quality": plot_teacher_quality}
assert list(FIGURES) == list(FIGURE_HELP)


def figure_path(study_dir: str | Path, name: str) -> Path:
    return Path(study_dir) / "figures" / f"{name}.png"


def plot_study(study_dir: str | Path, name: str, out_path: str | Path | None = None, **options: Any) -> Path:
    """One named figure of a study folder; a one-line error when the study lacks its data."""
    if name not in FIGURES:
        raise StudyDataError(f"unknown figure {name!r}; figures: {', '.join(FIGURES)}")
    study = load_study(study_dir)
    out = FIGURES[name](study.records, out_path or figure_path(study_dir, name), **options)
    if out is None:
        raise StudyDataError(f"{study_dir}: no data for the {name} figure; it needs {FIGURE_NEEDS[name]}")
    return out


def write_figures(study_dir: str | Path, records: list[RunRecord] | None = None) -> list[Path]:
    """Write every figure the study has data for into ``<study_dir>/figures/``; returns the files written."""
    if records is None:
        records = load_study(study_dir).records
    written = []
    for name, plot in FIGURES.items():
        out = plot(records, figure_path(study_dir, name))
        if out is not None:
            written.append(out)
    return written


__all__ = ["FIGURES", "plot_deviation", "plot_late_distillation", "plot_reliability", "plot_study", "plot_sweeps",
           "plot_teacher_quality", "plot_trajectory", "write_figures"]
