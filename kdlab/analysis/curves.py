"""The data behind a study's figures: selections of its records and their aggregation over seeds.

Plain methods are the ones named in the study config; sweep variants (``<label>[<param>=<value>]``) and
trajectory students (``<label>@<epoch>``) are selected separately.  A student's teacher run is the one the plan
distilled it from (:attr:`RunRecord.teacher_run_dir`), so an SFTN teacher trained for one student architecture is
never mixed with the one trained for another.  No plotting here: the same series (and their :class:`Stat` per
point, computed once) feed ``figures`` and the report's figure tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from kdlab.analysis.document import Stat, Table
from kdlab.runs.folder import RunFolder
from kdlab.study.records import RunRecord, read_metrics

LATE_PARAM = "switch_epoch"  # the Distiller option behind late distillation (Nagarajan et al. 2023, Sec. 3.2)
LOSS_KEYS = ("ce", "ce_teacher", "loss")  # the cross-entropy part of a teacher's logged loss, when logged


@dataclass
class Series:
    """One line of a figure: per x, the values of the runs (one per seed)."""

    label: str
    x: list[Any]
    values: list[list[float]]
    key: str | None = None  # the teacher or student method the line stands for (its colour across figures)

    @cached_property
    def stats(self) -> list[Stat]:
        """Per x, mean ± std and n of its values (computed once; the figures and the tables share them)."""
        return [Stat.of(v) for v in self.values]

    def stat(self, x: Any) -> Stat:
        """The Stat at ``x`` (an empty one, shown ``-``, where the line has no point)."""
        return self.stats[self.x.index(x)] if x in self.x else Stat.of(())

    @property
    def mean(self) -> list[float]:
        return [s.mean for s in self.stats]

    @property
    def std(self) -> list[float]:
        return [s.std for s in self.stats]

    @property
    def n(self) -> int:
        return max((len(v) for v in self.values), default=0)


@dataclass
class Pair:
    key: str | None  # the plan's "<teacher>--<student>" folder key; None for students without a teacher
    teacher: str | None
    student: str

    @property
    def title(self) -> str:
        return f"{self.teacher} -> {self.student}" if self.teacher else f"{self.student} (no teacher)"


def is_numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def make_series(label: str, points: Iterable[tuple[Any, float]], key: str | None = None) -> Series:
    """Group (x, value) points by x; numeric x sorted, other x in order of appearance."""
    groups: dict[Any, list[float]] = {}
    for x, v in points:
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            groups.setdefault(x, []).append(float(v))
    xs = list(groups)
    if all(is_numeric(x) for x in xs):
        xs.sort()
    return Series(label, xs, [groups[x] for x in xs], key)


def is_data_sweep(r: RunRecord) -> bool:
    """A run of a study repeated per value of a data set parameter: a plain method at that value, not a variant."""
    return (r.sweep_param or "").startswith("data.")


def _is_variant(r: RunRecord) -> bool:
    return r.sweep_param is not None and not is_data_sweep(r) and r.method_label != r.sweep_base


def teacher_variants(records: list[RunRecord]) -> set[str]:
    return {r.teacher_label for r in records if r.kind == "teacher" and _is_variant(r)}


def plain_teacher_labels(records: list[RunRecord]) -> list[str]:
    """Teacher method labels of the config, in config order (the first is the tables' baseline)."""
    return list(dict.fromkeys(r.teacher_label for r in records if r.kind == "teacher" and not _is_variant(r)))


def is_plain_student(r: RunRecord, variants: set[str]) -> bool:
    return (r.kind == "student" and not r.from_checkpoint and not _is_variant(r)
            and r.teacher_label not in variants)


def plain_student_labels(records: list[RunRecord]) -> tuple[list[str], list[str]]:
    """(distillation method labels, labels of students trained without a teacher), in config order."""
    variants = teacher_variants(records)
    plain = [r for r in records if is_plain_student(r, variants)]
    distill = list(dict.fromkeys(r.method_label for r in plain if r.pair is not None))
    alone = list(dict.fromkeys(r.method_label for r in plain if r.pair is None))
    return distill, alone


def pairs_of(records: list[RunRecord], among: list[RunRecord] | None = None) -> list[Pair]:
    """The teacher/student pairs of the distilled students in ``among`` (default: all records)."""
    by_dir = {r.run_dir: r for r in records}
    pairs: dict[str, Pair] = {}
    for r in records if among is None else among:
        if r.kind != "student" or r.pair is None or r.pair in pairs:
            continue
        t = by_dir.get(r.teacher_run_dir)
        pairs[r.pair] = Pair(r.pair, t.arch if t else r.pair.split("--")[0], r.arch)
    return list(pairs.values())


def teacher_records(records: list[RunRecord], pair: Pair, label: str) -> list[RunRecord]:
    """The teacher runs (one per seed) the pair's students with this teacher label were distilled from."""
    dirs = {r.teacher_run_dir for r in records
            if r.kind == "student" and r.pair == pair.key and r.teacher_label == label}
    out = [r for r in records if r.kind == "teacher" and r.run_dir in dirs]
    if not out:  # no finished student links the teacher to the pair: fall back to the architecture
        out = [r for r in records if r.kind == "teacher" and r.teacher_label == label and r.arch == pair.teacher]
    return list({r.seed: r for r in out}.values())


def students(records: list[RunRecord], pair: Pair, **match: Any) -> list[RunRecord]:
    if pair.key is not None:
        match["pair"] = pair.key
    else:
        match.update(pair=None, arch=pair.student)
    return [r for r in records if r.kind == "student" and all(r.get(k) == v for k, v in match.items())]


def alone_references(records: list[RunRecord], pair: Pair) -> dict[str, list[float]]:
    """top-1 of the students trained without a teacher (reference lines), by method label."""
    _, alone = plain_student_labels(records)
    ref = Pair(None, None, pair.student)
    out = {f"{a} student (no teacher)": [r.get("top1") for r in students(records, ref, method_label=a)]
           for a in alone}
    return {a: v for a, v in out.items() if v}


def seeds_of(recs: Iterable[RunRecord]) -> list[int]:
    return sorted({r.seed for r in recs})


# --- trajectory (SoTeacher first version, Fig. 1) ---------------------------------------------------------------------

@dataclass
class TrajectoryMethod:
    teacher_label: str
    teacher_top1: Series  # teacher test top-1 per epoch
    teacher_loss: Series  # teacher training loss per epoch (``loss_key`` of metrics.jsonl)
    loss_key: str
    student: Series  # top-1 of the student distilled from the checkpoint of each epoch
    seeds: list[int]


@dataclass
class Trajectory:
    pair: Pair
    method: str  # the distillation method label of the trajectory students
    methods: list[TrajectoryMethod]
    references: dict[str, list[float]] = field(default_factory=dict)


def _teacher_curves(run_dirs: list[Path]) -> tuple[Series, Series, str]:
    logs = [read_metrics(d) for d in run_dirs]
    key = next((k for k in LOSS_KEYS if logs and all(line and k in line[0] for line in logs)), "loss")
    acc = make_series("teacher test top-1", ((h["epoch"], h.get("test_top1")) for log in logs for h in log))
    loss = make_series(f"teacher training {key}", ((h["epoch"], h.get(key)) for log in logs for h in log))
    return acc, loss, key


def trajectories(records: list[RunRecord]) -> list[Trajectory]:
    traj = [r for r in records if r.kind == "student" and r.trajectory_epoch is not None]
    out = []
    for pair in pairs_of(records, traj):
        recs = [r for r in traj if r.pair == pair.key]
        method = recs[0].sweep_base
        methods = []
        for t in dict.fromkeys(r.teacher_label for r in recs):
            mine = [r for r in recs if r.teacher_label == t]
            dirs = sorted({r.teacher_run_dir for r in mine if r.teacher_run_dir is not None})
            acc, loss, key = _teacher_curves(dirs)
            student = make_series(f"student ({method})", ((r.trajectory_epoch, r.get("top1")) for r in mine))
            methods.append(TrajectoryMethod(t, acc, loss, key, student, seeds_of(mine)))
        out.append(Trajectory(pair, method, methods, alone_references(records, pair)))
    return out


# --- sweeps (SoTeacher App. Fig. 1, SFTN Tables 5-6) and late distillation (Nagarajan et al. 2023) --------------------

@dataclass
class Sweep:
    role: str  # teacher | student
    base: str  # the swept method's label
    param: str
    pair: Pair
    base_value: Any  # the value of the configuration the tables report (None when unknown)
    teacher: Series | None  # teacher top-1 against the value (teacher sweeps)
    students: list[Series]  # student top-1 against the value: per distillation method (teacher sweeps) or
    # per teacher method (student sweeps)
    references: dict[str, list[float]] = field(default_factory=dict)  # horizontal lines: label -> values
    seeds: list[int] = field(default_factory=list)

    @property
    def categorical(self) -> bool:
        xs = {x for s in [self.teacher, *self.students] if s is not None for x in s.x}
        return not all(is_numeric(x) for x in xs)


def sweep_keys(records: list[RunRecord]) -> list[tuple[str, str, str]]:
    """(role, base label, param) of every sweep with at least one finished variant, in plan order."""
    keys = [(r.kind, r.sweep_base, r.sweep_param) for r in records if _is_variant(r)]
    return list(dict.fromkeys(keys))


def _param_value(run_dir: Path, param: str) -> Any:
    """The swept parameter's value in a run's resolved config (the base runs carry no sweep label for every
    sweep of their method)."""
    try:
        cfg = yaml.safe_load(RunFolder(run_dir).config_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    method = cfg.get("method")
    return method.get(param) if isinstance(method, dict) else None


def _label_values(records: list[RunRecord], kind: str, base: str, param: str) -> dict[str, Any]:
    """Method label -> swept value, for the variants of one sweep and its base method."""
    out = {r.method_label: r.sweep_value for r in records
           if r.kind == kind and r.sweep_base == base and r.sweep_param == param and _is_variant(r)}
    base_run = next((r for r in records if r.kind == kind and r.method_label == base), None)
    if base_run is not None:
        v = _param_value(base_run.run_dir, param)
        if v is not None and v not in out.values():
            out = {base: v, **out}
    return out


def teacher_sweeps(records: list[RunRecord], base: str, param: str) -> list[Sweep]:
    values = _label_values(records, "teacher", base, param)
    distill, _ = plain_student_labels(records)
    baseline = (plain_teacher_labels(records) or [base])[0]
    out = []
    for pair in pairs_of(records):
        t_recs = [r for lbl in values for r in teacher_records(records, pair, lbl)]
        teacher = make_series("teacher", ((values[r.teacher_label], r.get("top1")) for r in t_recs))
        lines, refs = [], {}
        for m in distill:
            s = [r for r in students(records, pair, method_label=m) if r.teacher_label in values]
            lines.append(make_series(f"{m} student", ((values[r.teacher_label], r.get("top1")) for r in s), m))
            if baseline != base:
                refs[f"{m} student ({baseline} teacher)"] = [
                    r.get("top1") for r in students(records, pair, method_label=m, teacher_label=baseline)]
        if baseline != base:
            refs[f"teacher ({baseline})"] = [r.get("top1") for r in teacher_records(records, pair, baseline)]
        lines = [s for s in lines if s.x]
        if teacher.x or lines:
            out.append(Sweep("teacher", base, param, pair, values.get(base), teacher, lines,
                             {k: v for k, v in refs.items() if v}, seeds_of(t_recs)))
    return out


def student_sweeps(records: list[RunRecord], base: str, param: str) -> list[Sweep]:
    values = _label_values(records, "student", base, param)
    variants = teacher_variants(records)
    swept = [r for r in records if r.kind == "student" and r.method_label in values
             and not r.from_checkpoint and r.teacher_label not in variants]
    pairs = pairs_of(records, swept) or list({r.arch: Pair(None, None, r.arch) for r in swept}.values())
    out = []
    for pair in pairs:
        mine = [r for r in swept if (r.pair == pair.key if pair.key else r.arch == pair.student)]
        by_teacher = dict.fromkeys(r.teacher_label for r in mine)
        lines = [make_series(f"{base} student, " + (f"{t} teacher" if t else "no teacher"),
                             ((values[r.method_label], r.get("top1")) for r in mine if r.teacher_label == t), t)
                 for t in by_teacher]
        out.append(Sweep("student", base, param, pair, values.get(base), None, lines,
                         alone_references(records, pair), seeds_of(mine)))
    return out


def sweeps(records: list[RunRecord], late: bool = False) -> list[Sweep]:
    """Every sweep's panels; ``late``: only the switch_epoch sweeps (late distillation), else all the others."""
    out = []
    for role, base, param in sweep_keys(records):
        if (param == LATE_PARAM) != late or (late and role != "student"):
            continue
        out += teacher_sweeps(records, base, param) if role == "teacher" else student_sweeps(records, base, param)
    return out


# --- tables of the figures' numbers (the report) ---------------------------------------------------------------

def trajectory_table(tr: Trajectory) -> Table:
    """Per teacher epoch: each teacher method's teacher top-1 and the top-1 of the student distilled from it."""
    epochs = sorted({x for m in tr.methods for x in m.student.x})
    header = ["teacher epoch"]
    for m in tr.methods:
        header += [f"{m.teacher_label}: teacher top-1", f"{m.teacher_label}: {tr.method} student top-1"]
    rows = [[str(e)] + [s for m in tr.methods for s in (m.teacher_top1.stat(e), m.student.stat(e))]
            for e in epochs]
    return Table(header, rows, title="Test top-1 % by teacher epoch (mean ± std over seeds, n runs)")


def sweep_table(sw: Sweep) -> Table:
    """Per swept value (the tables' configuration marked "(base)"): the top-1 of each line of the sweep's panel."""
    lines = ([sw.teacher] if sw.teacher is not None else []) + sw.students
    xs = list(dict.fromkeys(x for s in lines for x in s.x))
    if all(is_numeric(x) for x in xs):
        xs.sort()
    rows = [[f"{x}" + (" (base)" if x == sw.base_value else "")] + [s.stat(x) for s in lines] for x in xs]
    return Table([sw.param] + [f"{s.label} top-1" for s in lines], rows,
                 title="Test top-1 % (mean ± std over seeds, n runs)")


def reference_table(sw: Sweep) -> Table | None:
    """The sweep panel's horizontal reference lines (baseline teacher, students alone), or None without any."""
    if not sw.references:
        return None
    return Table(["reference", "top-1"], [[k, Stat.of(v)] for k, v in sw.references.items()])
