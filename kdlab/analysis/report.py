"""``kdlab report STUDY_DIR``: one page per study with its tables and figures.

* ``report.md`` - the tables (as ``kdlab study`` writes them to ``results.md``) and the numbers behind the
  trajectory and sweep figures, with relative links to ``figures/*.png``;
* ``report.html`` - the same as one self-contained page: tables as HTML, figures embedded as base64 PNG, no
  external files, scripts or styles, so it can be mailed or archived and opened anywhere.

Both are rendered from one :class:`~kdlab.analysis.document.Document` of headings, paragraphs, tables and figures: each
table renders itself (``Table.to_markdown()`` / ``Table.to_html()``), nothing is parsed back from markdown.
Everything is recomputed from the study's ``runs.json`` and its run folders' ``summary.json`` files (and for the
figures their metrics and test predictions), so the report always agrees with what is on disk.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.analysis import curves
from kdlab.analysis.correlation import correlation_table
from kdlab.analysis.document import Document, Heading, Paragraph
from kdlab.analysis.figures import write_figures
from kdlab.analysis.scaling import scaling_table
from kdlab.analysis.tables import render_tables
from kdlab.core.checkpoint import atomic_write_text
from kdlab.study.records import StudyData, load_study


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)  # headings, paragraphs and tables below the figure
    figure: str | None = None  # figure name (figures/<name>.png)


@dataclass(frozen=True)
class Figure:
    """A figure of the report: a relative link in markdown, the PNG embedded (base64) in HTML."""

    name: str
    path: Path
    caption: str

    def to_markdown(self) -> str:
        return f"![{self.name}](figures/{self.path.name})\n*{self.caption}*"

    def to_html(self) -> str:
        data = base64.b64encode(self.path.read_bytes()).decode("ascii")
        return (f'<figure><img alt="{html.escape(self.name)}" src="data:image/png;base64,{data}">\n'
                f"<figcaption><em>{html.escape(self.caption, quote=False)}</em></figcaption>\n</figure>")


CAPTIONS = {
    "headline": "Test top-1 of each teacher method's teacher (left of the grey line) and of the students distilled "
                "from it, per distillation method; lines are the student trained without a teacher (band: ± std). "
                "Mean ± std over seeds, no bar for a single run; the numbers are the distillation table's.",
    "trajectory": "Teacher test accuracy and training loss per epoch, and the accuracy of the student distilled "
                  "from the teacher's checkpoint at that epoch (SoTeacher, Fig. 1). Mean ± std over seeds.",
    "sweeps": "Teacher and student test accuracy against each swept hyper-parameter (SoTeacher App. Fig. 1; "
              "SFTN Tables 5-6). ▲ marks the configuration the main tables report; dotted lines are the "
              "baseline teacher and its students. Mean ± std over seeds.",
    "late-distillation": "Late distillation: the student trains on the labels alone (cross-entropy) before the "
                         "switch epoch and with the distillation loss from it on (Nagarajan et al., Sec. 3.2). "
                         "Mean ± std over seeds.",
    "reliability": "Reliability diagrams: accuracy against confidence in 15 equal-width bins, test predictions "
                   "pooled over seeds; ECE in each title; below each diagram the number of predictions per bin.",
    "scaling": "Mean L1 distance of each trained teacher to p* on its training inputs (left) and on test inputs "
               "(right) against the number of training examples, log-log; dots are runs, lines least-squares "
               "fits with the slope's 95 % interval; the dotted line has slope -1/2 (Theorem 3.6's N term).",
    "teacher-quality": "Each distilled student's test top-1 against its teacher's test top-1 (left) and its "
                       "teacher's mean L1 distance to p* on the training inputs (right); colours are teacher "
                       "methods, hollow markers students of a teacher checkpoint (trajectory). Spearman rho with a "
                       "95% bootstrap interval over students (SoTeacher: the student is bounded by its teacher's "
                       "distance to p*, not by its accuracy).",
    "deviation": "Per test example, the teacher's probability of the true label against the student's, for the "
                 "distilled student and for the student trained alone (Nagarajan et al., Sec. 3.1), one column per "
                 "teacher method; lines are means over 10 bins of the teacher's probability.",
}


def sections(study: StudyData) -> list[Section]:
    recs = study.records
    out = [Section("Results at a glance", [], "headline"), Section("Results", list(render_tables(study.config, recs)))]
    traj = curves.trajectories(recs)
    if traj:
        blocks = [b for t in traj for b in (Heading(t.pair.title, 3), curves.trajectory_table(t))]
        out.append(Section("Teacher trajectory", blocks, "trajectory"))
    for name, title, late in [("sweeps", "Hyper-parameter effects", False),
                              ("late-distillation", "Late distillation", True)]:
        panels = curves.sweeps(recs, late=late)
        if panels:
            blocks = [b for sw in panels for b in (Heading(f"{sw.role} method {sw.base}: {sw.param} "
                                                           f"({sw.pair.title})", 3),
                                                   curves.sweep_table(sw), curves.reference_table(sw))
                      if b is not None]
            out.append(Section(title, blocks, name))
    table = scaling_table(recs)
    if table is not None:
        out.append(Section("Distance to p* against the training-set size", [table], "scaling"))
    table = correlation_table(recs)
    if table is not None:
        out.append(Section("Teacher quality and the student", [table], "teacher-quality"))
    out.append(Section("Calibration", [], "reliability"))
    out.append(Section("Student-teacher deviations", [], "deviation"))
    return out


def _summary_line(study: StudyData) -> str:
    cfg = study.config
    return (f"Study `{cfg.name}` on `{cfg.data.name}`: {len(study.records)} of {study.planned} planned runs "
            f"finished; seeds {list(cfg.seeds)}. Generated by `kdlab report` from the run folders in "
            f"`{study.study_dir}`.")


def report_document(study: StudyData, figures: dict[str, Path]) -> Document:
    """The report's blocks: title, summary, then per section its heading, figure (if drawn) and tables."""
    doc = Document([Heading(study.config.name, 1), Paragraph(_summary_line(study))])
    for sec in sections(study):
        if sec.figure is not None and sec.figure not in figures and not sec.blocks:
            continue
        doc.add(Heading(sec.title, 2))
        if sec.figure in figures:
            doc.add(Figure(sec.figure, figures[sec.figure], CAPTIONS[sec.figure]))
        doc.add(*sec.blocks)
    return doc


def render_markdown(study: StudyData, figures: dict[str, Path]) -> str:
    return report_document(study, figures).to_markdown() + "\n"


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; white-space: nowrap; }
thead th { background: #f2f2f2; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
code { background: #f4f4f4; padding: 0 0.25em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
"""


def render_html(doc: Document, title: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}'
            f"</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{doc.to_html()}\n</body>\n</html>\n")


def write_report(study_dir: str | Path, figures: list[Path] | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into the study folder (and the figures, unless given)."""
    study = load_study(study_dir)
    if figures is None:
        figures = write_figures(study.study_dir, study.records)
    by_name = {p.stem: p for p in figures if p.exists()}
    doc = report_document(study, by_name)  # one document, its tables' cells computed once, rendered twice
    md_path, html_path = study.study_dir / "report.md", study.study_dir / "report.html"
    atomic_write_text(md_path, doc.to_markdown() + "\n")
    atomic_write_text(html_path, render_html(doc, f"kdlab study {study.config.name}"))
    return md_path, html_path


__all__ = ["Figure", "Section", "render_html", "render_markdown", "report_document", "sections", "write_report"]
