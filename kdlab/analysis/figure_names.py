"""The study figures, one declaration each: its name, its help line, what a study needs for it, its report caption
and section, and the functions that draw it and compute its section's tables.

This table is the only place a figure is declared: :mod:`kdlab.analysis.figures` (``FIGURES``, ``plot_study``,
``write_figures``), :mod:`kdlab.analysis.report` (sections, their order and captions) and ``kdlab plot`` (names,
help, options) read it.  The functions are named, not imported (``"module:function"``), so that the CLI lists the
figures without importing matplotlib, numpy or torch; :meth:`FigureSpec.plot_function` imports one on first use.

To add a figure: write its ``plot_<name>(records, out_path, **options) -> Path | None`` (None: the study has no
data for it), append a :class:`FigureSpec` to :data:`SPECS`, and describe it in ``docs/figures.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# the rank of the report's "Results" section (the study's tables, no figure) among the figures' sections
RESULTS_RANK = 20


def resolve(ref: str) -> Callable[..., Any]:
    """The function a ``"package.module:function"`` reference names, its module imported on first use."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class FigureSpec:
    """One study figure.

    ``name``: the figure's name (``kdlab plot NAME``, ``figures/NAME.png``); ``help``: one line for
    ``kdlab plot --help``; ``needs``: what a study needs for it (said when it has no data); ``caption``: the
    report's caption; ``section``: the heading of its report section, and ``rank`` that section's place in the
    report (ascending; the tables' section is :data:`RESULTS_RANK`); ``plot``: ``"module:function"`` drawing it,
    ``(records, out_path, **options) -> Path | None``; ``tables``: ``"module:function"`` giving the blocks printed
    below the figure, ``(records) -> list | None`` (None: the study has no such section), or None: the section is
    the figure alone (left out when the figure is not drawn); ``options``: the keyword options its plot function
    takes from ``kdlab plot`` (``--teacher``, ``--split``).
    """

    name: str
    help: str
    needs: str
    caption: str
    section: str
    rank: int
    plot: str
    tables: str | None = None
    options: tuple[str, ...] = ()

    def plot_function(self) -> Callable[..., Any]:
        return resolve(self.plot)

    def tables_function(self) -> Callable[..., Any] | None:
        return None if self.tables is None else resolve(self.tables)


# in the order the figures are drawn and listed (kdlab plot --help); the report orders its sections by rank
SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        name="headline",
        help="teacher and student accuracy per teacher method and distillation method (mean ± std over seeds)",
        needs="finished teacher runs (and their students) of the config's methods, in a study that is not a data "
              "sweep",
        caption="Test top-1 of each teacher method's teacher (left of the grey line) and of the students distilled "
                "from it, per distillation method; lines are the student trained without a teacher (band: ± std). "
                "Mean ± std over seeds, no bar for a single run; the numbers are the distillation table's.",
        section="Results at a glance", rank=10,
        plot="kdlab.analysis.figures:plot_headline"),
    FigureSpec(
        name="trajectory",
        help="teacher accuracy and training loss per epoch, and the student distilled from each checkpoint",
        needs="trajectory students: add `trajectory: {every: K}` to the study config and teacher.train.save_every "
              "dividing K",
        caption="Teacher test accuracy and training loss per epoch, and the accuracy of the student distilled "
                "from the teacher's checkpoint at that epoch (SoTeacher, Fig. 1). Mean ± std over seeds.",
        section="Teacher trajectory", rank=30,
        plot="kdlab.analysis.figures:plot_trajectory", tables="kdlab.analysis.report:trajectory_tables"),
    FigureSpec(
        name="sweeps",
        help="teacher and student accuracy against each swept hyper-parameter",
        needs="finished sweep variants: add `sweeps:` over a parameter other than switch_epoch to the study config",
        caption="Teacher and student test accuracy against each swept hyper-parameter (SoTeacher App. Fig. 1; "
                "SFTN Tables 5-6). ▲ marks the configuration the main tables report; dotted lines are the "
                "baseline teacher and its students. Mean ± std over seeds.",
        section="Hyper-parameter effects", rank=40,
        plot="kdlab.analysis.figures:plot_sweeps", tables="kdlab.analysis.report:sweep_tables"),
    FigureSpec(
        name="reliability",
        help="reliability diagrams (15 bins) of the teachers and students, seeds pooled",
        needs="finished runs with saved test predictions (test_logits.npy, test_labels.npy)",
        caption="Reliability diagrams: accuracy against confidence in 15 equal-width bins, test predictions "
                "pooled over seeds; ECE in each title; below each diagram the number of predictions per bin.",
        section="Calibration", rank=80,
        plot="kdlab.analysis.prediction_figures:plot_reliability"),
    FigureSpec(
        name="deviation",
        help="per test example (--split train: training point), teacher vs student probability of the true "
             "label, for every teacher method (--teacher: one)",
        needs="a teacher method with distilled students and saved test predictions (--split train: their "
              "checkpoints)",
        caption="Per test example, the teacher's probability of the true label against the student's, for the "
                "distilled student and for the student trained alone (Nagarajan et al., Sec. 3.1), one column per "
                "teacher method; lines are means over 10 bins of the teacher's probability.",
        section="Student-teacher deviations", rank=90,
        plot="kdlab.analysis.prediction_figures:plot_deviation", options=("teacher", "split")),
    FigureSpec(
        name="late-distillation",
        help="student accuracy against the epoch where distillation starts (switch_epoch)",
        needs="a student sweep over switch_epoch: add `sweeps: [{role: student, method: kd, param: "
              "switch_epoch, values: [...]}]`",
        caption="Late distillation: the student trains on the labels alone (cross-entropy) before the "
                "switch epoch and with the distillation loss from it on (Nagarajan et al., Sec. 3.2). "
                "Mean ± std over seeds.",
        section="Late distillation", rank=50,
        plot="kdlab.analysis.figures:plot_late_distillation",
        tables="kdlab.analysis.report:late_distillation_tables"),
    FigureSpec(
        name="scaling",
        help="teacher distance to p* against the training-set size, log-log, with fitted slopes",
        needs="a data sweep over num_train on data with p* (mixed-feature): add `sweeps: [{role: data, param: "
              "num_train, values: [...]}]`",
        caption="Mean L1 distance of each trained teacher to p* on its training inputs (left) and on test inputs "
                "(right) against the number of training examples, log-log; dots are runs, lines least-squares "
                "fits with the slope's 95 % interval; the dotted line has slope -1/2 (Theorem 3.6's N term).",
        section="Distance to p* against the training-set size", rank=60,
        plot="kdlab.analysis.scaling:plot_scaling", tables="kdlab.analysis.report:scaling_tables"),
    FigureSpec(
        name="teacher-quality",
        help="student accuracy against its teacher's accuracy and distance to p* (Spearman rho, CI)",
        needs="at least 8 distilled students (of the trajectory's method, else kd) whose summaries record "
              "their teachers' measures (teacher_top1, teacher_ece; teacher_pstar_l1_* on mixed-feature "
              "data)",
        caption="Each distilled student's test top-1 against its teacher's test top-1 (left) and its "
                "teacher's mean L1 distance to p* on the training inputs (right, on data with a known p*); colours "
                "are teacher methods, hollow markers students of a teacher checkpoint (trajectory). Spearman rho "
                "with a 95% bootstrap interval over students (SoTeacher: the student is bounded by its teacher's "
                "distance to p*, not by its accuracy).",
        section="Teacher quality and the student", rank=70,
        plot="kdlab.analysis.correlation:plot_teacher_quality", tables="kdlab.analysis.report:teacher_quality_tables"),
)

FIGURE_SPECS: dict[str, FigureSpec] = {f.name: f for f in SPECS}
# name -> help line, in the table's order (what `kdlab plot --help` lists)
FIGURE_HELP: dict[str, str] = {f.name: f.help for f in SPECS}


def figure_spec(name: str) -> FigureSpec | None:
    return FIGURE_SPECS.get(name)


__all__ = ["FIGURE_HELP", "FIGURE_SPECS", "RESULTS_RANK", "SPECS", "FigureSpec", "figure_spec", "resolve"]
