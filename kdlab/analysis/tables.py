"""The seeds' kind of tables, from a study's records (one :class:`RunRecord` per finished run).

Per teacher/student pair:

* **distillation** - columns are teacher methods (the first is the baseline); rows are the teacher's accuracy, the
  student trained without a teacher, then one row per distillation method with the student's accuracy and its
  paired difference to the baseline teacher's column (seed by seed, with a 95 % t interval from 3 seeds on,
  marked n.s. when the interval covers 0), then Best and Average rows over the distillation methods;
* **teacher quality** - per teacher method: accuracy, ECE and NLL before and after temperature scaling (when the
  study holds data out), distance to the true label distribution on training and test inputs (mixed-feature);
* **fidelity** - per distillation method and teacher method: top-1 agreement, KL(teacher ‖ student) and linear
  CKA of the penultimate representations;
* **paired differences** - per teacher method, its difference to the baseline teacher run with the same seed
  (teacher accuracy, distance to p*, ECE, each distilled student's accuracy): mean with a 95 % t interval over
  the seeds, n pairs, the same marks (with at least two seeds), followed by the **reading**: those differences
  in words, each "higher"/"lower" only when its interval excludes 0.

Every table is a :class:`~kdlab.analysis.document.Table` whose numeric cells are :class:`~kdlab.analysis.document.Stat`
objects: mean ± std over seeds with n, computed once; the paired difference to the baseline teacher's column is
the Stat's ``difference`` (an :class:`~kdlab.analysis.stats.Interval`).  The trajectory and sweep figures have their
own tables (``curves``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kdlab.analysis.curves import is_data_sweep
from kdlab.analysis.document import Document, Heading, Paragraph, Stat, Statement, Strong, Table, Value
from kdlab.analysis.stats import CI, HOLM_MARK, MIN_PAIRS, NOT_SIGNIFICANT, familywise, paired_by_seed
from kdlab.config.schema import StudyConfig
from kdlab.methods import needs_teacher
from kdlab.study.plan import arch_label, data_label, pair_label
from kdlab.study.records import RunRecord


def _runs(records: Iterable[RunRecord], key: str, **match: Any) -> list[tuple[int, Any]]:
    """(seed, value of ``key``) of each matching run."""
    return [(r.seed, r.get(key)) for r in records if all(r.get(k) == v for k, v in match.items())]


def _stat(records: Iterable[RunRecord], key: str = "top1", digits: int = 2, baseline: Stat | None = None,
          **match: Any) -> Stat:
    """The cell of the matching runs (with its paired difference to a ``baseline`` cell); a run whose value is
    missing or NaN (CKA of a collapsed representation) stays in the Stat as dropped, so the table can say why the
    cell has fewer values."""
    return Stat.of_runs(_runs(records, key, **match), digits, baseline)


def _teachers_of(records: list[RunRecord], pair: dict) -> list[RunRecord]:
    """The pair's teachers: shared ones and those trained for this pair's student (SFTN's branches)."""
    return [r for r in records if r.kind == "teacher" and r.arch == pair["teacher"]
            and r.pair in (None, pair["key"])]


def _compared(records: list[RunRecord], teacher_labels: list[str], **match: Any) -> list[Stat]:
    """One Stat per teacher method; each but the baseline (the first) carries its paired difference to it."""
    base = _stat(records, teacher_label=teacher_labels[0], **match)
    return [base] + [_stat(records, baseline=base, teacher_label=t, **match) for t in teacher_labels[1:]]


class Failures:
    """The planned runs that did not finish, for the cells they leave empty: such a cell says ``failed`` (or
    ``skipped``, ``missing``) with a footnote number, and the table's note gives each footnote's reason."""

    def __init__(self, unfinished: Iterable[RunRecord] = ()):
        self.unfinished = list(unfinished)
        self.reasons: list[str] = []

    def cell(self, cell: Any, **match: Any) -> Any:
        """``cell`` itself unless it holds no value and a matching run did not finish."""
        if not isinstance(cell, Stat) or cell.n or cell.dropped:
            return cell
        run = next((r for r in self.unfinished if all(r.get(k) == v for k, v in match.items())), None)
        if run is None:
            return cell
        reason = f"{run.what}: {run.status}: {run.reason}"
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"{run.status} [{self.reasons.index(reason) + 1}]"

    def note(self) -> str:
        return " ".join(f"[{i}] {why}." for i, why in enumerate(self.reasons, start=1))


def _with_note(note: str, failures: Failures) -> str:
    return "\n\n".join(n for n in (note, failures.note()) if n)


DIFFERENCE_NOTE = (f"{NOT_SIGNIFICANT}: not significant, the interval covers 0 (the seeds cannot tell the "
                   f"difference's sign); no interval from fewer than {MIN_PAIRS} paired seeds.")


def distillation_table(records: list[RunRecord], pair: dict, teacher_labels: list[str], alone_labels: list[str],
                       distill_labels: list[str], unfinished: Iterable[RunRecord] = ()) -> Table:
    """``unfinished``: the planned runs that failed, were skipped or are missing: their empty cells say so."""
    t_recs = _teachers_of(records, pair)
    s_recs = [r for r in records if r.kind == "student"]
    failures = Failures(unfinished)
    if not teacher_labels:  # a study of students trained alone
        rows = [[f"Student {pair['student']} ({a})",
                 failures.cell(_stat(s_recs, method_label=a, arch=pair["student"], pair=None), kind="student",
                               method_label=a, arch=pair["student"], pair=None)]
                for a in alone_labels]
        return Table(["", "top-1"], rows, title="Test top-1 % (mean ± std over seeds, n runs) of the students "
                                               "trained alone", note=failures.note())
    teachers = _compared(t_recs, teacher_labels)
    rows: list[list] = [[f"Teacher {pair['teacher']}",
                         *(failures.cell(c, kind="teacher", arch=pair["teacher"], method_label=t)
                           for c, t in zip(teachers, teacher_labels))]]
    if pair.get("assistant"):
        a_recs = [r for r in records if r.kind == "assistant" and r.pair == pair["key"]]
        rows.append([f"Assistant {pair['assistant']}"] + [_stat(a_recs, teacher_label=t) for t in teacher_labels])
    for a in alone_labels:
        cell = failures.cell(_stat(s_recs, method_label=a, arch=pair["student"], pair=None), kind="student",
                             method_label=a, arch=pair["student"], pair=None)
        rows.append([f"Student {pair['student']} ({a})"] + [cell] * len(teacher_labels))
    method_rows = []
    for m in distill_labels:
        recs = [r for r in s_recs if r.pair == pair["key"] and r.method_label == m]
        method_rows.append([m, *_compared(recs, teacher_labels)])
    rows += method_rows
    if distill_labels:
        columns = [[row[i] for row in method_rows] for i in range(1, len(teacher_labels) + 1)]
        means = [[s.mean for s in col if s.n] for col in columns]
        for row, m in zip(method_rows, distill_labels):  # after the means: a failed cell is text
            row[1:] = [failures.cell(c, kind="student", pair=pair["key"], method_label=m, teacher_label=t)
                       for c, t in zip(row[1:], teacher_labels)]
        rows.append([Strong("Best")] + [Value(max(xs) if xs else None) for xs in means])
        rows.append([Strong("Average")] + [Value(sum(xs) / len(xs) if xs else None) for xs in means])
    intervals = sum(isinstance(c, Stat) and c.difference is not None and c.difference.verdict in
                    ("higher", "lower", "not significant") for row in rows for c in row[1:])
    family = (f"{intervals} intervals in this table, each at 95 %: the paired-difference tables below adjust "
              f"them for the number of comparisons (Holm, {HOLM_MARK})." if intervals > 1 else "")
    return Table(["", *teacher_labels], rows,
                 title="Test top-1 % (mean ± std over seeds, n runs); in parentheses the paired difference to the "
                       f"{teacher_labels[0]} teacher (same seed, same data) with its 95 % t interval.",
                 note=_with_note(_notes(DIFFERENCE_NOTE if len(teacher_labels) > 1 else "", family), failures))


TEACHER_QUALITY = [("top1", "top-1", 2), ("ece", "ECE", 2), ("nll", "NLL", 3), ("ece_ts", "ECE (TS)", 2),
                   ("nll_ts", "NLL (TS)", 3), ("temperature", "T", 2), ("pstar_l1_train", "L1 to p* (train)", 3),
                   ("pstar_l1_test", "L1 to p* (test)", 3)]


def teacher_quality_table(records: list[RunRecord], pair: dict, teacher_labels: list[str]) -> Table:
    t_recs = _teachers_of(records, pair)
    cols = [(k, name, d) for k, name, d in TEACHER_QUALITY if any(k in r.metrics for r in t_recs)]
    rows = [[t] + [_stat(t_recs, k, d, teacher_label=t) for k, _, d in cols] for t in teacher_labels]
    return Table(["teacher method"] + [name for _, name, _ in cols], rows, title="Teacher quality")


def fidelity_table(records: list[RunRecord], pair: dict, teacher_labels: list[str],
                   distill_labels: list[str], unfinished: Iterable[RunRecord] = ()) -> Table:
    recs = [r for r in records if r.kind == "student" and r.pair == pair["key"]]
    failures = Failures(unfinished)
    rows = []
    for m in distill_labels:
        for t in teacher_labels:
            sel = dict(method_label=m, teacher_label=t)
            cells = [_stat(recs, "agreement", **sel), _stat(recs, "kl_teacher_student", 3, **sel),
                     _stat(recs, "cka_teacher_student", 3, **sel)]
            rows.append([m, t, *(failures.cell(c, kind="student", pair=pair["key"], **sel) for c in cells)])
    return Table(["method", "teacher", "agreement %", "KL(teacher ‖ student)", "linear CKA"], rows,
                 title="Student fidelity and similarity to its teacher (test set)", note=failures.note())


PAIRED_TEACHER = [("top1", "teacher top-1", 2), ("pstar_l1_train", "L1 to p* (train)", 3),
                  ("pstar_l1_test", "L1 to p* (test)", 3), ("ece", "teacher ECE", 2)]


def paired_table(records: list[RunRecord], pair: dict, teacher_labels: list[str],
                 distill_labels: list[str]) -> Table | None:
    """Each teacher method minus the baseline teacher, seed by seed (None without two paired seeds)."""
    if len(teacher_labels) < 2:
        return None
    t_recs = _teachers_of(records, pair)
    if any(is_data_sweep(r) for r in t_recs):  # labels at other data set values: not pairs
        return None
    s_recs = [r for r in records if r.kind == "student" and r.pair == pair["key"]]
    cols = [(t_recs, k, name, d, {}) for k, name, d in PAIRED_TEACHER if any(k in r.metrics for r in t_recs)]
    cols += [(s_recs, "top1", f"{m} student top-1", 2, {"method_label": m}) for m in distill_labels]
    base, rows = teacher_labels[0], []
    for t in teacher_labels[1:]:
        row: list = [t]
        for recs, key, _, digits, match in cols:
            a, b = _runs(recs, key, teacher_label=base, **match), _runs(recs, key, teacher_label=t, **match)
            row.append(CI(paired_by_seed(a, b), digits, signed=True))
        rows.append(row)
    if not any(c.interval.n >= 2 for row in rows for c in row[1:]):
        return None
    rows, family = _adjusted(rows)
    return Table(["teacher method", *(name for _, _, name, _, _ in cols)], rows,
                 title=f"Paired differences to the {base} teacher of the same seed: mean [95 % t interval] "
                       "(n seeds)", note=_notes(DIFFERENCE_NOTE, family))


def _adjusted(rows: list[list]) -> tuple[list[list], str]:
    """The rows with every interval of the table adjusted as one family (Holm), and the family's note."""
    cells = [c for row in rows for c in row[1:] if isinstance(c, CI)]
    adjusted, note = familywise(cells)
    it = iter(adjusted)
    return [[row[0], *(next(it) if isinstance(c, CI) else c for c in row[1:])] for row in rows], note


def _notes(*notes: str) -> str:
    return "\n\n".join(n for n in notes if n)


def alone_table(records: list[RunRecord], pair: dict, teacher_labels: list[str], alone: str,
                distill_labels: list[str]) -> Table | None:
    """Against the student trained alone (``alone``, same seed): each teacher's lead over it (the room left for
    distillation), and each distillation method's student, per teacher method.  None without a comparison."""
    if not teacher_labels:
        return None
    t_recs = _teachers_of(records, pair)
    if any(is_data_sweep(r) for r in t_recs):
        return None
    s_recs = [r for r in records if r.kind == "student"]
    solo = _runs(s_recs, "top1", method_label=alone, arch=pair["student"], pair=None)
    if not solo:
        return None
    mine = [r for r in s_recs if r.pair == pair["key"]]
    rows: list[list] = [["teacher top-1", *(CI(paired_by_seed(solo, _runs(t_recs, "top1", teacher_label=t)), 2,
                                              signed=True) for t in teacher_labels)]]
    for m in distill_labels:
        rows.append([f"{m} student top-1", *(CI(paired_by_seed(solo, _runs(mine, "top1", method_label=m,
                                                                           teacher_label=t)), 2, signed=True)
                                             for t in teacher_labels)])
    if not any(c.interval.n >= 2 for row in rows for c in row[1:]):
        return None
    rows, family = _adjusted(rows)
    return Table(["minus the student alone", *teacher_labels], rows,
                 title=f"Paired differences to the student trained alone ({alone}) of the same seed, per teacher "
                       "method: mean [95 % t interval] (n seeds). The teacher row is the teacher's lead over the "
                       "student alone; a distilled student below 0 did worse than without its teacher.",
                 note=_notes(DIFFERENCE_NOTE, family))


def _said(name: str, ci: CI) -> str:
    iv, d = ci.interval, ci.digits
    verdict, bounds = iv.verdict, f"[{iv.low:+.{d}f}, {iv.high:+.{d}f}]"
    if verdict in ("higher", "lower"):
        return f"{name} {verdict} by {abs(iv.estimate):.{d}f} {bounds}"
    if verdict == "not significant":
        return f"{name} not significantly different ({iv.estimate:+.{d}f} {bounds})"
    return f"{name} {iv.estimate:+.{d}f} from {iv.n} seed{'s' * (iv.n != 1)}, too few for an interval"


def _alone_sentences(alone: Table) -> list[str]:
    """Per distillation method and teacher method: whether distillation helped or hurt the student."""
    out = []
    for row in alone.rows[1:]:
        method = str(row[0]).removesuffix(" student top-1")
        for t, ci in zip(alone.header[1:], row[1:]):
            iv = ci.interval
            if iv.verdict == "no pairs":
                continue
            said = f"the {method} student of the {t} teacher against the student alone: " + _said("top-1", ci)
            if iv.verdict in ("higher", "lower"):
                said += ": distillation " + ("helped" if iv.verdict == "higher" else "hurt")
                said += f" (not after Holm's adjustment {HOLM_MARK})" if ci.loses_holm else ""
            out.append(said + ".")
    return out


def reading(paired: Table | None, base: str, alone: Table | None = None) -> Statement | None:
    """What the paired differences support, in words: per teacher method and column, higher or lower than the
    baseline teacher when the 95 % interval excludes 0, else not significant (or too few seeds); then whether each
    distilled student did better or worse than the student alone (distillation helped or hurt)."""
    sentences = []
    for row in paired.rows if paired is not None else []:
        said = [_said(name, ci) + (f" {HOLM_MARK}" if ci.loses_holm else "")
                for name, ci in zip(paired.header[1:], row[1:]) if ci.interval.verdict != "no pairs"]
        if said:
            sentences.append(f"the {row[0]} teacher against the {base} teacher: " + "; ".join(said) + ".")
    if alone is not None:
        sentences += _alone_sentences(alone)
    if not sentences:
        return None
    return Statement("Reading", f"(paired differences, 95 % t intervals; a difference counts only when its "
                     f"interval excludes 0; {HOLM_MARK}: not after Holm's adjustment within its table): "
                     + " ".join(s[0].upper() + s[1:] for s in sentences))


def study_tables(records: list[RunRecord], pairs: list[dict], teacher_labels: list[str], alone_labels: list[str],
                 distill_labels: list[str], caption: str, unfinished: Iterable[RunRecord] = ()) -> Document:
    """The caption, then per pair a heading and its distillation, teacher quality and fidelity tables (cells of
    ``unfinished`` runs, failed or skipped, say so)."""
    doc = Document([Paragraph(caption)])
    every = teacher_labels
    for pair in pairs:
        teacher_labels = pair.get("teacher_labels") or every  # the pair's own methods
        via = f" -> {pair['assistant']}" if pair.get("assistant") else ""
        doc.add(Heading(f"{pair['teacher']}{via} -> {pair['student']}", 3))
        if alone_labels or distill_labels:  # a study of teachers alone: their accuracy is in the quality table
            doc.add(distillation_table(records, pair, teacher_labels, alone_labels, distill_labels, unfinished))
        doc.add(teacher_quality_table(records, pair, teacher_labels))
        if distill_labels:
            doc.add(fidelity_table(records, pair, teacher_labels, distill_labels, unfinished))
        paired = paired_table(records, pair, teacher_labels, distill_labels)
        vs_alone = alone_table(records, pair, teacher_labels, alone_labels[0], distill_labels) if alone_labels \
            else None
        doc.add(paired, vs_alone)
        if teacher_labels:
            doc.add(reading(paired, teacher_labels[0], vs_alone))
    return doc


__all__ = ["TEACHER_QUALITY", "alone_table", "distillation_table", "fidelity_table", "paired_table", "reading",
           "study_tables", "teacher_quality_table"]


def render_tables(cfg: StudyConfig, records: list[RunRecord], unfinished: Iterable[RunRecord] = ()) -> Document:
    """The study's tables (caption, per pair a heading and its tables) as a :class:`Document`: ``results.md`` is
    its markdown, the report shows the same objects as HTML.  The main tables hold the configured method labels;
    sweep variants and trajectory students have their own tables and figures (``kdlab report``).  A method whose
    runs failed or were skipped (``unfinished``, with their reasons) keeps its row: its cells say ``failed`` with
    a footnote giving the reason."""
    unfinished = [r for r in unfinished if r.status in ("failed", "skipped")]
    done = {(r.kind, r.method_label) for r in [*records, *unfinished]}
    sweep = next((sw for sw in cfg.sweeps if sw.role == "data"), None)

    def expand(label: str) -> list[str]:  # a data sweep's labels carry the value
        return [label] if sweep is None else [data_label(label, sweep, v) for v in sweep.values]

    base_of = {x: t for t in cfg.teacher.methods for x in expand(t)}
    teacher_labels = [x for x in base_of if ("teacher", x) in done]
    alone, distill = [], []
    for lbl, spec in cfg.student.methods.items():
        if needs_teacher(spec.name):
            distill += [lbl] if ("student", lbl) in done else []
        else:
            alone += [x for x in expand(lbl) if ("student", x) in done]
    teacher_labels = teacher_labels or list(base_of)
    pairs = []
    for p in cfg.pair_list():
        own = [t for t in teacher_labels if p.teacher_methods is None or base_of[t] in p.teacher_methods]
        pairs.append({"teacher": arch_label(p.teacher), "student": arch_label(p.student), "key": pair_label(p),
                      "assistant": arch_label(p.assistant) if p.assistant is not None else None,
                      "teacher_labels": own})
    fit_on = f"held-out fraction {cfg.holdout}"
    if cfg.data.val_fraction and not cfg.holdout:
        fit_on = "the validation split"
    caption = (f"{cfg.data.name}: seeds {list(cfg.seeds)}; test top-1 % at the last epoch; {fit_on} for "
               "temperature scaling")
    if cfg.data.val_fraction:
        caption += (f"; validation split {cfg.data.val_fraction} of each seed's training data (best epoch chosen "
                    "on it)")
    return study_tables(records, pairs, teacher_labels, alone, distill, caption, unfinished)
