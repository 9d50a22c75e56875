"""A study's figures as PNG files, computed from its records and run folders only (no training, and no data set
but for the deviation figure of the training points, ``split="train"``).

Which figures there are, what each shows and needs, and which function draws it:
:data:`kdlab.analysis.figure_names.SPECS` (one declaration per figure).  Each ``plot_<name>(records, out_path)``
returns the written path, or None when the study has no data for it; :func:`write_figures` writes all that apply
into ``<study>/figures/``.  Every panel shows mean ± std over seeds (a band, or error bars on categorical axes) and
says how many seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlab.analysis import curves
from kdlab.analysis.correlation import plot_teacher_quality
from kdlab.analysis.document import Stat
from kdlab.analysis.figure_names import SPECS, figure_spec
from kdlab.analysis.plotting import (
    band,
    blank,
    categorical_order,
    colour,
    figure_legend,
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
from kdlab.analysis.prediction_figures import plot_deviation, plot_reliability
from kdlab.study.records import RunRecord, StudyDataError, load_study


def _teacher_colours(records: list[RunRecord]) -> dict[str, str]:
    return {t: colour(i) for i, t in enumerate(curves.plain_teacher_labels(records))}


@dataclass
class HeadlinePanel:
    """One panel of the headline figure: per group (the teacher, then each distillation method's student) the
    top-1 of each teacher method's runs, each but the first teacher method's with its paired difference to the
    first (``Stat.difference``); ``alone``: the students trained without a teacher (lines)."""

    title: str
    groups: list[tuple[str, dict[str, Stat]]]
    alone: dict[str, Stat]


def headline_panels(records: list[RunRecord]) -> list[HeadlinePanel]:
    """Per pair (per teacher architecture in a study of teachers alone), the numbers of the distillation table:
    its plain methods only (no sweep variants or trajectory students), and no data sweep, whose labels stand
    for other data sets."""
    recs = [r for r in records if not curves.is_data_sweep(r)]
    teachers = curves.plain_teacher_labels(recs)
    distill, alone = curves.plain_student_labels(recs)
    top1 = lambda rs: Stat.of([r.get("top1") for r in rs])  # noqa: E731

    def compared(runs_of) -> dict[str, Stat]:  # each teacher method's cell, paired with the first one's
        cells: dict[str, Stat] = {}
        for t in teachers:
            runs = [(r.seed, r.get("top1")) for r in runs_of(t)]
            cells[t] = Stat.of_runs(runs, baseline=cells.get(teachers[0]))
        return cells

    out = []
    for p in curves.pairs_of(recs):
        groups = [("teacher", compared(lambda t, p=p: curves.teacher_records(recs, p, t)))]
        groups += [(f"{m} student", compared(lambda t, p=p, m=m: curves.students(recs, p, method_label=m,
                                                                                 teacher_label=t)))
                   for m in distill]
        ref = curves.Pair(None, None, p.student)
        lines = {a: top1(curves.students(recs, ref, method_label=a)) for a in alone}
        out.append(HeadlinePanel(p.title, groups, {a: s for a, s in lines.items() if s.n}))
    if not out:  # teachers alone: their accuracy per architecture
        for arch in dict.fromkeys(r.arch for r in recs if r.kind == "teacher"):
            mine = [r for r in recs if r.kind == "teacher" and r.arch == arch]
            stats = {t: top1([r for r in mine if r.teacher_label == t]) for t in teachers}
            out.append(HeadlinePanel(f"teacher {arch}", [("teacher", stats)], {}))
    return [p for p in out if any(s.n for _, g in p.groups for s in g.values())]


def _headline_panel(ax, panel: HeadlinePanel, colours: dict[str, str]) -> None:
    methods = [t for t in colours if any(g.get(t) is not None and g[t].n for _, g in panel.groups)]
    ns = [s.n for _, g in panel.groups for s in g.values() if s.n]
    most = max(ns)
    spread = 0.8 / max(len(methods), 1)
    for t in methods:  # filled legend samples, whatever a method's first point is
        ax.plot([], [], marker="o", markersize=5, linestyle="none", color=colours[t], label=f"{t} teacher")
    any_hollow = False
    for i, (_, stats) in enumerate(panel.groups):
        for j, t in enumerate(methods):
            s = stats.get(t)
            if s is None or not s.n:
                continue
            x = i + (j - (len(methods) - 1) / 2) * spread
            # hollow: the seeds cannot tell this point from the first teacher method's (paired interval)
            hollow = s.difference is not None and not s.difference.excludes_zero
            # one run has no spread: a bar of zero length would read as a spread of zero
            ax.errorbar([x], [s.mean], yerr=[s.std] if s.n > 1 else None, color=colours[t], marker="o",
                        markersize=5, capsize=3, linestyle="none", markerfacecolor="white" if hollow else None)
            any_hollow = any_hollow or hollow
            if s.n < most:  # fewer seeds than the other points: say so at the point
                ax.annotate(f"n={s.n}", (x, s.mean), xytext=(4, -3), textcoords="offset points", fontsize=6,
                            color=colours[t])
    if any_hollow:
        ax.plot([], [], marker="o", markersize=5, linestyle="none", color="0.35", markerfacecolor="white",
                label=f"hollow: not significantly different from the {methods[0]} teacher's (paired over seeds, "
                      "95 % interval)")
    for k, (a, s) in enumerate(panel.alone.items()):
        style = ["--", ":", "-."][k % 3]
        ax.axhline(s.mean, color="0.35", linestyle=style, linewidth=1.1,
                   label=f"{a} student (no teacher)" + ("" if s.n > 1 else ", n=1"))
        if s.n > 1:
            ax.axhspan(s.mean - s.std, s.mean + s.std, color="0.5", alpha=0.12, linewidth=0)
    if len(panel.groups) > 1:
        ax.axvline(0.5, color="0.75", linewidth=0.8)  # the teacher apart from its students
    ax.set_xticks(range(len(panel.groups)), [g for g, _ in panel.groups])
    ax.set_xlim(-0.5, len(panel.groups) - 0.5)
    ax.set_ylabel("test top-1 (%)")
    varies = " (fewer where marked)" if min(ns) < most else ""
    title(ax, f"{panel.title}\nmean ± std over seeds, {n_seeds(most)}{varies}")


def plot_headline(records: list[RunRecord], out_path: str | Path) -> Path | None:
    """Student top-1 per teacher method and distillation method, beside the teachers' own top-1 and the student
    alone: the study's result at a glance (the distillation table's numbers)."""
    panels = headline_panels(records)
    if not panels:
        return None
    colours = _teacher_colours([r for r in records if not curves.is_data_sweep(r)])
    ncols = min(2, len(panels))
    groups = max(len(p.groups) for p in panels)
    width = max(5.0, 1.2 + groups * (0.5 + 0.3 * len(colours)))  # room for each group's points and its label
    fig, axes = new_figure(-(-len(panels) // ncols), ncols, width=width, height=3.6)
    flat = [ax for row in axes for ax in row]
    for ax, panel in zip(flat, panels):
        _headline_panel(ax, panel, colours)
    for ax in flat[len(panels):]:
        blank(ax)
    figure_legend(fig)
    suptitle(fig, "Test top-1 of the teachers and of their students, per teacher method (mean ± std over seeds)")
    return save(fig, out_path)


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


def _sweep_figure(panels: list[curves.Sweep], out_path, colours, xlabel, panel_title, heading) -> Path:
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(nrows, ncols, width=4.6, height=3.6)
    flat = [ax for row in axes for ax in row]
    for ax, sw in zip(flat, panels):
        _sweep_panel(ax, sw, colours, xlabel(sw), panel_title(sw))
    for ax in flat[len(panels):]:
        blank(ax)
    figure_legend(fig)  # the panels share their lines' labels; below them, a legend covers no point
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


# name -> plot function, in the order of the declarations (resolved here, so a wrong reference fails on import)
FIGURES: dict[str, Callable[..., Path | None]] = {f.name: f.plot_function() for f in SPECS}


def figure_path(study_dir: str | Path, name: str) -> Path:
    return Path(study_dir) / "figures" / f"{name}.png"


def plot_study(study_dir: str | Path, name: str, out_path: str | Path | None = None, **options: Any) -> Path:
    """One named figure of a study folder; a one-line error when the study lacks its data."""
    spec = figure_spec(name)
    if spec is None:
        raise StudyDataError(f"unknown figure {name!r}; figures: {', '.join(FIGURES)}")
    study = load_study(study_dir)
    out = FIGURES[name](study.records, out_path or figure_path(study_dir, name), **options)
    if out is None:
        raise StudyDataError(f"{study_dir}: no data for the {name} figure; it needs {spec.needs}")
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


__all__ = ["FIGURES", "HeadlinePanel", "headline_panels", "plot_deviation", "plot_headline",
           "plot_late_distillation", "plot_reliability", "plot_study", "plot_sweeps", "plot_teacher_quality",
           "plot_trajectory", "write_figures"]
