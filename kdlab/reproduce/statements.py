"""What an experiment says about itself: the recipe its paper's text states, and each place where kdlab's runs
depart from it or had to fill a gap.

A paper states part of a recipe (SoTeacher App. G.1's optimiser, App. Table 5's betas, SFTN Sec. 4.2's loss
weights, ...).  A :class:`Stated` fact records one such statement about the runs it covers, as a key of the
resolved run config (``optim.lr``, ``method.average``) and its value.  A :class:`Choice` says in words where kdlab
does something the text does not say:

* ``code``: kdlab follows the authors' released code instead of the text (the default, because the code made the
  tables); ``as_written`` holds the method parameters that give the text's rule, which ``kdlab reproduce ID
  --as-written`` resolves instead;
* ``silent``: the text gives no value, or only a reference ("identical to CRD"), and kdlab chose;
* ``row``: a row of the paper's table that kdlab does not train as listed (not reproducible, or the runs of
  another row), with the reason.

``kdlab reproduce ID --dry-run`` and the rendered paper table list an experiment's choices (those whose ``where``
selects one of its runs).  :func:`departures` finds every resolved run that differs from a stated fact without a
choice that accounts for it: ``tests/reproduce/test_statements.py`` requires none for every experiment, and a dry
run with overrides lists the ones the overrides make.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kdlab.config import DistillRunConfig, TeacherRunConfig, load_config

KINDS = {"code": "follows the released code, not the text", "silent": "the paper is silent: kdlab's choice",
         "row": "a row not trained as listed"}


@dataclass(frozen=True)
class Above:
    """A stated bound instead of a value (SFTN: feature methods 'jointly with KD' means a KD weight above 0)."""

    bound: float

    def __str__(self) -> str:
        return f"> {self.bound:g}"


@dataclass(frozen=True)
class Stated:
    """The runs ``where`` selects have ``key`` = ``value`` in the paper's text (``source``)."""

    key: str
    value: Any
    source: str
    where: Mapping[str, Any] = field(default_factory=dict)

    def holds(self, value: Any) -> bool:
        if isinstance(self.value, Above):
            return isinstance(value, int | float) and value > self.value.bound
        return same(value, self.value)


@dataclass(frozen=True)
class Choice:
    """A departure from the text or a gap in it, for the runs ``where`` selects (``{}``: all of them)."""

    kind: str  # code | silent | row
    text: str
    where: Mapping[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] = ()  # the resolved-config keys it accounts for on those runs
    as_written: Mapping[str, Any] = field(default_factory=dict)  # code: method parameters of the text's rule

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind of choice {self.kind!r}")
        if self.as_written and (self.kind != "code" or "method.name" not in self.where):
            raise ValueError("as_written belongs to a 'code' choice that names its method (where: method.name)")


def same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_views(plan: Iterable[Any]) -> list[dict[str, Any]]:
    """Each planned run as one flat mapping: its resolved config's dotted keys, ``kind``, ``label`` (its method
    label) and, for a student, ``teacher.method`` (the method that trained its teacher)."""
    plan = list(plan)
    method_of = {r.run_dir: r.config.get("method") for r in plan if r.kind == "teacher"}
    out = []
    for run in plan:
        schema = TeacherRunConfig if run.kind == "teacher" else DistillRunConfig
        view = flatten(load_config(schema, run.config).model_dump(mode="json"))
        view |= {"kind": run.kind, "label": run.method_label}
        if run.needs and run.kind != "teacher":
            m = method_of.get(run.needs[0])
            view["teacher.method"] = m.get("name") if isinstance(m, Mapping) else m
        out.append(view)
    return out


class _AnyValue:
    def __repr__(self) -> str:
        return "any value"


ANY = _AnyValue()  # a ``where`` value: the key is set (not None), to anything


def _match(want: Any, value: Any) -> bool:
    if want is ANY:
        return value is not None
    return value in want if isinstance(want, tuple) else same(value, want)


def matches(where: Mapping[str, Any], view: Mapping[str, Any]) -> bool:
    """Whether a run has every ``where`` value (a tuple: any of its values; :data:`ANY`: any value but None)."""
    return all(_match(want, view.get(k)) for k, want in where.items())


def relevant(choices: Iterable[Choice], views: list[dict[str, Any]]) -> list[Choice]:
    """The choices that concern at least one of the runs (row choices always do)."""
    return [c for c in choices if c.kind == "row" or any(matches(c.where, v) for v in views)]


@dataclass(frozen=True)
class Departure:
    """Runs that differ from a stated fact without a choice saying why."""

    fact: Stated
    value: Any
    runs: tuple[str, ...]  # their folders

    def text(self) -> str:
        return (f"{self.fact.key} = {self.value!r} where {self.fact.source} states {self.fact.value} "
                f"({len(self.runs)} run{'s' if len(self.runs) != 1 else ''}, e.g. {self.runs[0]})")


def departures(facts: Iterable[Stated], choices: Iterable[Choice], plan: Iterable[Any]) -> list[Departure]:
    """Per stated fact and differing value, the runs without a choice for that key.  Of several facts about one
    key of a run, the last that selects it applies (a specific fact after the general one)."""
    plan, facts, choices = list(plan), list(facts), list(choices)
    found: dict[tuple[int, str], tuple[Any, list[str]]] = {}
    for run, view in zip(plan, run_views(plan)):
        applying: dict[str, int] = {}
        for i, f in enumerate(facts):
            if f.key in view and matches(f.where, view):
                applying[f.key] = i
        for key, i in applying.items():
            if facts[i].holds(view[key]) or any(key in c.keys and matches(c.where, view) for c in choices):
                continue
            found.setdefault((i, repr(view[key])), (view[key], []))[1].append(str(run.run_dir))
    return [Departure(facts[i], value, tuple(runs)) for (i, _), (value, runs) in found.items()]


WRITTEN = "-as-written"  # the label (and so the run folder) of a method resolved as the text has it


def written_methods(study: Mapping[str, Any], choices: Iterable[Choice]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per role, the method labels whose spec the ``code`` choices change, with the changed spec."""
    out: dict[str, dict[str, dict[str, Any]]] = {"teacher": {}, "student": {}}
    for role in out:
        for label, spec in study[role]["methods"].items():
            spec = {"name": spec} if isinstance(spec, str) else dict(spec)
            new = dict(spec)
            for c in choices:
                if c.as_written and c.where["method.name"] == spec["name"] and c.where.get("kind") in (None, role):
                    new.update(c.as_written)
            if new != spec:
                out[role][label] = new
    teachers = {lbl: ({"name": v} if isinstance(v, str) else v) for lbl, v in study["teacher"]["methods"].items()}
    while True:  # a teacher that starts from a changed teacher changes too
        more = {lbl: spec for lbl, spec in teachers.items()
                if lbl not in out["teacher"] and spec.get("pretrained") in out["teacher"]}
        if not more:
            return out
        out["teacher"].update(more)


def written_labels(study: Mapping[str, Any], choices: Iterable[Choice]) -> dict[str, str]:
    """Method label -> the label of its as-written runs (only the labels whose runs change)."""
    return {label: label + WRITTEN for changed in written_methods(study, choices).values() for label in changed}


def as_written(study: dict[str, Any], choices: Iterable[Choice]) -> dict[str, Any]:
    """The study config with each ``code`` choice's ``as_written`` parameters in the methods it names, under
    labels of their own (``<label>-as-written``, every reference to them renamed), so that only the runs the text
    changes train again and the rest are shared with the code's variant; the study's own folder gets the suffix."""
    changed = written_methods(study, choices)
    ren = {role: {lbl: lbl + WRITTEN for lbl in specs} for role, specs in changed.items()}
    t, s = ren["teacher"], ren["student"]
    out = {**study, "out_dir": study["out_dir"] + WRITTEN}
    for role in ("teacher", "student"):
        r = dict(study[role])
        methods = {}
        for label, spec in r["methods"].items():
            spec = changed[role].get(label, spec)
            if isinstance(spec, Mapping) and spec.get("pretrained") in t:
                spec = {**spec, "pretrained": t[spec["pretrained"]]}
            methods[ren[role].get(label, label)] = spec
        r["methods"] = methods
        r["overrides"] = {ren[role].get(k, k): v for k, v in r.get("overrides", {}).items()}
        out[role] = r
    out["student"]["by_teacher"] = {s.get(m, m): {t.get(k, k): v for k, v in per.items()}
                                    for m, per in study["student"].get("by_teacher", {}).items()}
    out["sweeps"] = [{**sw, "method": ren[sw["role"]].get(sw["method"], sw["method"])} if sw["role"] in ren else sw
                     for sw in study.get("sweeps", [])]
    if study.get("trajectory"):
        tr = dict(study["trajectory"])
        tr["method"] = s.get(tr.get("method", "kd"), tr.get("method", "kd"))
        if tr.get("teachers"):
            tr["teachers"] = [t.get(x, x) for x in tr["teachers"]]
        out["trajectory"] = tr
    out["pairs"] = [{**p, "teacher_methods": [t.get(x, x) for x in p["teacher_methods"]]}
                    if p.get("teacher_methods") else p for p in study["pairs"]]
    return out


__all__ = ["ANY", "Above", "Choice", "Departure", "Stated", "as_written", "departures", "relevant",
           "run_views", "written_labels"]
