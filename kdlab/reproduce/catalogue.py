"""The catalogue: every table and figure of the SoTeacher and SFTN papers as studies kdlab can run.

An :class:`Experiment` names its published table (``kdlab/reproduce/published``), the studies that produce it
at the paper's scale (:class:`Part`, each a plain study config from :mod:`~kdlab.reproduce.recipes`) and the
function that fills the paper's layout from their records.  Parts of one paper and data set share a run folder,
so a table that needs runs another table already trained (SoTeacher Table 4 reads Table 1's students) trains
nothing new, and an experiment plans only the runs its table or figure reads.  What each experiment states
about itself (the paper's recipe, where kdlab follows the released code instead, where it had to choose, rows not
trained as listed) is :mod:`kdlab.reproduce.statements`: the papers' share in :mod:`~kdlab.reproduce.paper_text`,
each experiment's own in its ``facts`` and ``choices``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdlab.core.errors import ConfigError
from kdlab.reproduce.layouts import PartResult, best_by_mean, paired_difference, per_seed, split, stat
from kdlab.reproduce.paper_text import IMAGENET, TINY, paper_choices, paper_facts
from kdlab.reproduce.recipes import model, pair, sftn, soteacher, soteacher_teachers, study
from kdlab.reproduce.statements import Choice, Stated

CellFn = Callable[[dict[str, PartResult], str, str], Any]
METRIC_NAMES = {"kl": "kl_teacher_student", "cka": "cka_teacher_student"}  # the tables' names -> kdlab's


@dataclass(frozen=True)
class Part:
    name: str
    study: dict[str, Any]  # the study config at the paper's scale
    paper_pairs: tuple[str, ...] = ()  # the paper's key of each of the study's pairs, in order


@dataclass(frozen=True)
class Experiment:
    id: str  # "<paper>/<table id>"
    measures: str  # one line: what the table shows
    parts: tuple[Part, ...]
    cell: CellFn | None  # (parts, row key, column key) -> Stat | None; None: a figure without published values
    digits: int = 2
    notes: str = ""  # what the table is made of (e.g. "the runs of Table 1")
    figure: str | None = None  # the kdlab figure of a figure entry (trajectory, sweeps)
    facts: tuple[Stated, ...] = ()  # the recipe the table itself states, beyond the paper's (:mod:`.paper_text`)
    choices: tuple[Choice, ...] = ()  # this experiment's choices, beyond the paper's

    @property
    def all_facts(self) -> list[Stated]:
        return paper_facts(self.paper) + list(self.facts)

    @property
    def all_choices(self) -> list[Choice]:
        return list(self.choices) + paper_choices(self.paper)

    @property
    def paper(self) -> str:
        return self.id.split("/")[0]

    @property
    def table_id(self) -> str:
        return self.id.split("/")[1]


# -- shared pieces --------------------------------------------------------------------------------------------

SOTEACHER_CIFAR_PAIRS = (("wrn_40_2-wrn_40_1", "wrn_40_2", "wrn_40_1"), ("wrn_40_2-wrn_16_2", "wrn_40_2", "wrn_16_2"),
                         ("resnet32x4-ShuffleV2", "resnet32x4", "ShuffleV2"))
FEATURE_13 = ("fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "nst", "crd", "sskd", "rco")
SFTN_METHODS = ("kd", "fitnet", "at", "sp", "vid", "rkd", "pkt", "ab", "ft", "crd", "sskd", "ofd")
def _keyed(*pairs: tuple[str, str]) -> tuple[tuple[str, str, str], ...]:
    return tuple((f"{t}-{s}", t, s) for t, s in pairs)


SFTN_T1_PAIRS = _keyed(("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet32x4", "resnet8x4"),
                       ("resnet32x4", "resnet8x2"))
SFTN_T2_PAIRS = _keyed(("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"), ("ResNet50", "vgg8"),
                       ("wrn_40_2", "ShuffleV2"))
SWEEP_PAIRS = _keyed(("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"), ("wrn_40_2", "wrn_16_2"),
                     ("wrn_40_2", "wrn_40_1"))


def _pairs(spec) -> tuple[list[dict], tuple[str, ...]]:
    return [pair(t, s) for _, t, s in spec], tuple(k for k, _, _ in spec)


def _part(key: str, pairs_spec, name: str, **kw) -> Part:
    """Part ``key`` of an experiment: study ``name`` (its folder runs/reproduce/<name>) over ``pairs_spec``."""
    pairs, keys = _pairs(pairs_spec)
    return Part(key, study(name, pairs=pairs, **kw), keys)


def _methods(names, extra: dict | None = None) -> dict[str, Any]:
    return {**(extra or {}), **{m: m for m in names}}


def _soteacher_cifar(key: str, name: str, ablations: bool = True) -> Part:
    """Table 1's study (CIFAR-100, three pairs, the four teacher methods, KD), shared by Tables 4 and 6
    (``ablations``: with the no-CR / no-LR teachers)."""
    return _part(key, SOTEACHER_CIFAR_PAIRS, name, dataset="cifar100",
                 teachers=soteacher_teachers(1e-5, ablations), students={"kd": "kd"}, protocol="soteacher",
                 runs="soteacher/cifar100")


def _soteacher_tiny(key: str, name: str, ablations: bool = True) -> Part:
    return _part(key, (("imagenet_resnet34-imagenet_resnet18", "tiny_resnet34", "tiny_resnet18"),), name,
                 dataset="tinyimagenet", teachers=soteacher_teachers(1e-6, ablations), students={"kd": "kd"},
                 protocol="soteacher", runs="soteacher/tinyimagenet")


def _sftn_grid(key: str, name: str, pairs_spec, methods=SFTN_METHODS, dataset="cifar100", lambda_kl=3.0,
               seeds=(0, 1, 2), runs="sftn/cifar100", alone: bool = True) -> Part:
    """Standard and SFTN teachers x ``methods`` (``alone``: and the student trained alone, the tables' row)."""
    return _part(key, pairs_spec, name, dataset=dataset,
                 teachers={"standard": "standard", "sftn": sftn(lambda_kl)},
                 students=_methods(methods, {"none": "none"} if alone else {}), protocol="sftn", runs=runs,
                 seeds=list(seeds))


def _metric(col: str, default: str = "top1") -> str:
    return split(col)[2] or default


# -- cells --------------------------------------------------------------------------------------------------

def teacher_student_cell(part_of: Callable[[str], str], method: str = "kd") -> CellFn:
    """Rows are teacher methods; a column is <pair>.student|teacher[.metric] (SoTeacher Tables 1, 2, 7)."""
    def cell(parts, row, col):
        pair_key, role, metric = split(col)
        p = parts[part_of(pair_key)]
        if role == "student":
            return stat(p.student(pair_key, row, method, metric or "top1"))
        return stat(p.teacher(pair_key, row, metric or "top1"))
    return cell


def method_grid_cell(part_of: Callable[[str], str], alone: str = "none", best_of=SFTN_METHODS,
                     metric_default: str = "top1", digits: int = 2) -> CellFn:
    """Rows are distillation methods (plus teacher / none / best / average); a column is <pair>.<teacher label>
    or <pair>.delta (teacher label minus the first one, paired per seed), optionally .<metric>
    (SoTeacher Table 6; SFTN Tables 1-3, 9, 10)."""
    def values(p, pair_key, teacher, row, metric):
        if row == "teacher":
            return p.teacher(pair_key, teacher, metric)
        if row == alone:
            return p.alone(pair_key, alone, metric)
        if row in ("best", "average"):
            rows = [p.student(pair_key, teacher, m, metric) for m in best_of]
            return best_by_mean(rows) if row == "best" else per_seed(rows, statistics.fmean)
        return p.student(pair_key, teacher, row, metric)

    def cell(parts, row, col):
        pair_key, teacher, metric = split(col)
        metric = METRIC_NAMES.get(metric, metric) if metric else metric_default
        p = parts[part_of(pair_key)]
        if teacher == "delta":
            labels = list(p.config.teacher.methods)
            if row in ("teacher", alone):
                return None
            return paired_difference(values(p, pair_key, labels[1], row, metric),
                                     values(p, pair_key, labels[0], row, metric), digits)
        return stat(values(p, pair_key, teacher, row, metric), digits)
    return cell


def one(name: str) -> Callable[[str], str]:
    return lambda _pair: name


# -- SoTeacher ------------------------------------------------------------------------------------------------

def _soteacher_t2_part(pair_key: str) -> str:
    return "tiny" if pair_key.startswith("imagenet_resnet34") else "imagenet"


def _t3_cell(parts, row, col):
    arch, metric, _ = split(col)
    p = parts["tiny" if arch.startswith("imagenet") else "cifar"]
    scale = 0.01 if metric.startswith("ece") else 1.0  # kdlab reports ECE in %, the table as a fraction
    return stat(p.teacher(arch, row, metric), 3, scale)


def _t4_cell(parts, row, col):
    pair_key, _, _ = split(col)
    p = parts["tiny" if pair_key.startswith("imagenet") else "cifar"]
    return stat(p.student(pair_key, row, "kd", "agreement"))


T7_SAME_AS = {"l2": "standard"}  # Table 7's l2 (5e-4) row is the standard teacher (see its choice)


def _t7_cell(parts, row, col):
    pair_key, role, _ = split(col)
    p = parts["cifar"]
    teacher = T7_SAME_AS.get(row, row)
    if role == "student":
        return stat(p.student(pair_key, teacher, "kd"))
    return stat(p.teacher(pair_key, teacher))


def _t7_study() -> Part:
    teachers = {"standard": "standard", "soteacher": soteacher(1e-5),
                "l1": {"name": "l1", "weight": 1e-5}, "mixup": {"name": "mixup", "alpha": 0.2},
                "cutmix": {"name": "cutmix", "alpha": 0.2}, "augmix": {"name": "augmix", "alpha": 1.0, "width": 3},
                "crl": {"name": "crl", "weight": 1.0}}
    return _part("cifar", SOTEACHER_CIFAR_PAIRS[:1], "soteacher-table7", dataset="cifar100",
                 teachers=teachers, students={"kd": "kd"}, protocol="soteacher", runs="soteacher/cifar100")


def _holdout(part: Part) -> Part:
    s = part.study
    s["holdout"] = 0.1
    s["runs_dir"] = s["runs_dir"] + "-holdout"
    s["student"]["methods"] = {}  # teachers only
    return part


def _sweeps_soteacher() -> Part:
    part = _part("tiny", (("imagenet_resnet34-imagenet_resnet18", "tiny_resnet34", "tiny_resnet18"),),
                 name="soteacher-fig1", dataset="tinyimagenet",
                 teachers={"standard": "standard", "soteacher": soteacher(1e-6)}, students={"kd": "kd"},
                 protocol="soteacher", runs="soteacher/tinyimagenet")
    part.study["sweeps"] = [
        {"role": "teacher", "method": "soteacher", "param": "lambda_lr", "values": [1e-7, 1e-6, 1e-5, 1e-4]},
        {"role": "teacher", "method": "soteacher", "param": "lambda_cr_max", "values": [0.5, 1.0, 2.0, 4.0]},
        {"role": "teacher", "method": "soteacher", "param": "schedule",
         "values": ["linear", "cosine", "cyclic", "piecewise"]}]
    return part


def _trajectory() -> Part:
    part = _part("cifar", SOTEACHER_CIFAR_PAIRS[:1], "soteacher-early_fig1", dataset="cifar100",
                 teachers={"standard": "standard", "soteacher": soteacher(1e-5)}, students={"kd": "kd"},
                 protocol="soteacher", runs="soteacher/cifar100")
    part.study["trajectory"] = {"every": 10, "method": "kd"}
    return part


# -- SFTN -----------------------------------------------------------------------------------------------------

def _sftn_t4_parts() -> tuple[Part, ...]:
    pairs = SFTN_T1_PAIRS[:3] + SFTN_T2_PAIRS[:3]
    main = _part("main", pairs, "sftn-table4", dataset="cifar100",
                 teachers={"standard": "standard", "sftn": sftn(3.0)}, students={"none": "none", "kd": "kd"},
                 protocol="sftn", runs="sftn/cifar100")
    rco = _part("rco", pairs, "sftn-table4-rco", dataset="cifar100", teachers={"standard": "standard"},
                students={"rco": "rco", "rco_eei_4": {"name": "rco", "num_anchors": 4}}, protocol="sftn",
                runs="sftn/cifar100")
    # RCO-EEI-4: 4 anchors, 240 x 4 epochs (kdlab: one 960-epoch run, the decays at the same fractions of it)
    rco.study["student"]["overrides"] = {"rco_eei_4": {"train": {"epochs": 960},
                                                       "schedule": {"milestones": [600, 720, 840]}}}
    out = [main, rco]
    for key, t, s in pairs:  # DML / KDCL: the student trained together with a peer of the teacher's architecture
        peer = model(t)
        out.append(_part(f"collab-{key}", ((key, t, s),), f"sftn-table4-{key}", dataset="cifar100",
                         teachers={"standard": "standard"},
                         students={"dml": {"name": "dml", "peer": peer["name"]},
                                   "kdcl": {"name": "kdcl", "peer": peer["name"]}},
                         protocol="sftn", runs="sftn/cifar100"))
    return tuple(out)


def _t4_sftn_cell(parts, row, col):
    pair_key, what, _ = split(col)
    main = parts["main"]
    if row in ("dml", "kdcl"):
        p = parts[f"collab-{pair_key}"]
        acc = p.alone(pair_key, row)
    elif row == "teacher":
        return stat(main.teacher(pair_key, "standard")) if what == "accuracy" else None
    elif row == "none":
        return stat(main.alone(pair_key)) if what == "accuracy" else None
    elif row == "sftn_4":
        return None  # not reproducible: see the entry's notes
    else:
        part, teacher, method = {"standard": ("main", "standard", "kd"), "sftn": ("main", "sftn", "kd"),
                                 "rco": ("rco", "standard", "rco"), "rco_eei_4": ("rco", "standard", "rco_eei_4")}[row]
        acc = parts[part].student(pair_key, teacher, method)
    return stat(acc) if what == "accuracy" else paired_difference(acc, main.alone(pair_key))


SWEEP_BASE = "sftn_kl1"  # the sweeps' base SFTN (lambda_KL 1, tau~ 1): not Tables 1-2's SFTN (lambda_KL 3)


def _sweep_sftn(name: str, param: str, values: list, standard: bool) -> Part:
    """SFTN teachers swept over ``param`` (``standard``: and the standard teacher, a row of the table)."""
    part = _part("main", SWEEP_PAIRS, name, dataset="cifar100",
                 teachers={**({"standard": "standard"} if standard else {}), SWEEP_BASE: sftn(1.0, 1.0)},
                 students={"kd": "kd"}, protocol="sftn", runs="sftn/cifar100")
    part.study["sweeps"] = [{"role": "teacher", "method": SWEEP_BASE, "param": param, "values": values}]
    return part


def _sweep_cell(param: str, key_of: Callable[[str], Any]) -> CellFn:
    """Rows are swept values (or 'standard'); columns <pair>.teacher|student and average.teacher|student."""
    def label(row):
        if row == "standard":
            return "standard"
        v = key_of(row)
        return SWEEP_BASE if v == 1 else f"{SWEEP_BASE}[{param}={v}]"

    def cell(parts, row, col):
        pair_key, role, _ = split(col)
        p = parts["main"]
        t = label(row)
        if pair_key == "average":
            rows = [p.teacher(k, t) if role == "teacher" else p.student(k, t, "kd") for k in p.paper_pairs]
            return stat(per_seed(rows, statistics.fmean))
        return stat(p.teacher(pair_key, t) if role == "teacher" else p.student(pair_key, t, "kd"))
    return cell


T10_METHODS = ("kd", "fitnet", "sp", "vid", "crd", "sskd", "ofd")
T7_BRANCHES = {"wrn_40_2-wrn_16_2": ("resnet8x2", "wrn_16_1", "wrn_16_2", "ShuffleV2", "resnet32x4", "wrn_40_2"),
               "resnet32x4-resnet8x4": ("wrn_16_1", "resnet8x2", "resnet8x4", "ShuffleV2", "resnet32x4", "wrn_40_2")}
T7_METHODS = ("kd", "sp", "ft", "crd", "sskd", "ofd")


def _sftn_t7_parts() -> tuple[Part, ...]:
    out = []
    for key, t, s in (SFTN_T1_PAIRS[0], SFTN_T1_PAIRS[2]):
        teachers = {"standard": "standard", **{f"sftn_sb_{b}": sftn(3.0, student=model(b))
                                               for b in T7_BRANCHES[key]}}
        out.append(_part(key, ((key, t, s),), f"sftn-table7-{key}", dataset="cifar100", teachers=teachers,
                         students=_methods(T7_METHODS), protocol="sftn", runs="sftn/cifar100"))
        branches = tuple((f"{key}.{b}", t, b) for b in T7_BRANCHES[key])  # each branch architecture alone
        out.append(_part(f"{key}.alone", branches, f"sftn-table7-{key}-alone", dataset="cifar100",
                         teachers={"standard": "standard"}, students={"none": "none"}, protocol="sftn",
                         runs="sftn/cifar100"))
    return tuple(out)


def _t7_sftn_cell(parts, row, col):
    pair_key, teacher, _ = split(col)
    p = parts[pair_key]
    if row == "sb":
        if teacher == "standard":
            return None
        return stat(parts[f"{pair_key}.alone"].alone(f"{pair_key}.{teacher.removeprefix('sftn_sb_')}"))
    if row == "teacher":
        return stat(p.teacher(pair_key, teacher))
    rows = [p.student(pair_key, teacher, m) for m in T7_METHODS]
    if row == "average":
        return stat(per_seed(rows, statistics.fmean))
    if row == "best":
        return stat(best_by_mean(rows))
    return stat(p.student(pair_key, teacher, row))


FINE_TUNING = {"train": {"epochs": 60}, "optim": {"lr": 0.005}, "schedule": {"milestones": []}}


def _sftn_t8_parts() -> tuple[Part, ...]:
    teachers = _part("teachers", SWEEP_PAIRS, "sftn-table8", dataset="cifar100",
                     teachers={"standard": "standard", "sftn": sftn(3.0),
                               "sftn_pretrained": sftn(3.0, pretrained="standard", branch_only_epochs=30)},
                     students={}, protocol="sftn", runs="sftn/cifar100")
    # Sec. 4.6: from the pretrained teacher, 30 epochs of the branches alone, then 30 of everything (kdlab: the
    # learning rate of the last quarter of the standard schedule, constant)
    teachers.study["teacher"]["overrides"] = {"sftn_pretrained": FINE_TUNING}
    student = _part("student", SWEEP_PAIRS, "sftn-table8-student", dataset="cifar100",
                    teachers={"standard": "standard"}, students={"kd": "kd"}, protocol="sftn", runs="sftn/cifar100")
    student.study["group_size"] = 1  # a time table: each student's own time, not its share of a group's
    return teachers, student


def _t8_cell(parts, row, col):
    if col == "student":
        return stat(parts["student"].student(row, "standard", "kd", "train_time"), 0)
    label = {"teacher": "standard", "sftn_teacher": "sftn", "sftn_teacher_pretrained": "sftn_pretrained"}[col]
    return stat(parts["teachers"].teacher(row, label, "train_time"), 0)


def _sftn_t9_part() -> Part:
    part = _part("main", SFTN_T2_PAIRS[1:2], "sftn-table9", dataset="cifar100",
                 teachers={"standard": "standard", "sftn": sftn(3.0),
                           "sftn_ft": sftn(3.0, pretrained="standard", branch_only_epochs=30)},
                 students=_methods(("kd", "sp", "ft", "crd", "sskd", "ofd"), {"none": "none"}), protocol="sftn",
                 runs="sftn/cifar100")
    part.study["teacher"]["overrides"] = {"sftn_ft": FINE_TUNING}
    return part


def _fig3_cell(parts, row, col):
    pair_key, teacher, _ = split(col)
    p = parts["t1"] if pair_key in {k for k, _, _ in SFTN_T1_PAIRS} else parts["t2"]
    if row == "teacher":
        return stat(p.teacher(pair_key, "standard"))
    return stat(best_by_mean([p.student(pair_key, teacher, m) for m in SFTN_METHODS]))


def _t1_or_t2(pair_key: str) -> str:
    return "t1" if pair_key in {k for k, _, _ in SFTN_T1_PAIRS} else "t2"


# -- the catalogue ------------------------------------------------------------------------------------------

TINY_CHOICE = Choice(
    "silent", "Tiny-ImageNet: ResNet34 / ResNet18 with the small-input stem (a 3x3 stride-1 convolution, no max "
    "pool), as SoTeacher's code trains them, and random crops of 64 with 4 pixels of padding (App. G.1 says "
    "'random cropping')", TINY)
ONE_RUN = Choice("silent", "ImageNet: one run per cell, as the paper (it prints no std)", IMAGENET)
FT_CHOICE = Choice(
    "silent", "SFTN from a pretrained teacher: the 60 epochs (30 of the branches alone, then 30 of everything, "
    "Sec. 4.6) at a constant learning rate 0.005, the last quarter's of the standard schedule: the paper gives the "
    "epochs only", {"method.name": "sftn", "method.branch_only_epochs": 30}, ("optim.lr", "schedule.milestones"))


def _sweep_facts(source: str, param: str, values: list) -> tuple[Stated, ...]:
    """The swept values a table's rows state, one per teacher label of the sweep."""
    label = lambda v: SWEEP_BASE if v == 1 else f"{SWEEP_BASE}[{param}={v}]"  # noqa: E731
    return tuple(Stated(f"method.{param}", float(v), source, {"kind": "teacher", "label": label(v)}) for v in values)


def _experiments() -> list[Experiment]:
    return [
        Experiment("soteacher/table1", "CIFAR-100 teacher and KD-student top-1: standard, SoTeacher, no-CR, no-LR "
                   "(3 pairs)", (_soteacher_cifar("cifar", "soteacher-table1"),),
                   teacher_student_cell(one("cifar"))),
        Experiment("soteacher/table2", "Tiny-ImageNet (top-1/top-5) and ImageNet (top-1) teacher and KD student",
                   (_soteacher_tiny("tiny", "soteacher-table2-tiny"),
                    _part("imagenet", (("imagenet_resnet152-imagenet_resnet18", "imagenet_resnet152",
                                        "imagenet_resnet18"),), "soteacher-table2-imagenet",
                          dataset="imagenet", teachers={"standard": "standard",
                                                        "soteacher": soteacher(1e-6, buffer="memmap")},
                          students={"kd": "kd"}, protocol="soteacher", runs="soteacher/imagenet", seeds=[0])),
                   teacher_student_cell(_soteacher_t2_part),
                   choices=(TINY_CHOICE, ONE_RUN,
                            Choice("silent", "ImageNet: the standard PyTorch recipe (90 epochs, lr 0.1 decayed x0.1 "
                                   "at 30 and 60, batch 256, weight decay 1e-4, as SFTN's ImageNet runs): SoTeacher "
                                   "gives none", IMAGENET),
                            Choice("silent", "ImageNet: lambda_LR 1e-6, the paper's Tiny-ImageNet value (it gives "
                                   "none for ImageNet), the consistency buffer memory-mapped (1.28 M x 1000 floats)",
                                   {**IMAGENET, "method.name": "soteacher"}),
                            Choice("silent", "ImageNet: KD at CE 0.5 + KD 0.5, T 4, App. G.2's weights for CIFAR-100 "
                                   "and Tiny-ImageNet", {**IMAGENET, "method.name": "kd"}),
                            Choice("row", "no-CR / no-LR on ImageNet: not trained, as in the paper ('we are not able "
                                   "to perform ablation experiments on ImageNet')"))),
        Experiment("soteacher/table3", "Teacher ECE and NLL before and after temperature scaling (WRN-40-2, "
                   "ResNet32x4, ResNet34 on Tiny-ImageNet)",
                   (_holdout(_part("cifar", (("wrn_40_2", "wrn_40_2", "wrn_40_1"),
                                             ("resnet32x4", "resnet32x4", "ShuffleV2")),
                                   "soteacher-table3-cifar", dataset="cifar100",
                                   teachers={"standard": "standard", "soteacher": soteacher(1e-5)},
                                   students={}, protocol="soteacher", runs="soteacher/cifar100")),
                    _holdout(_part("tiny", (("imagenet_resnet34", "tiny_resnet34", "tiny_resnet18"),),
                                   "soteacher-table3-tiny", dataset="tinyimagenet",
                                   teachers={"standard": "standard", "soteacher": soteacher(1e-6)},
                                   students={}, protocol="soteacher", runs="soteacher/tinyimagenet"))),
                   _t3_cell, digits=3,
                   choices=(Choice("silent", "the hold-out split ('the optimal temperature is located on an "
                                   "additional holdout set'): a stratified 10 % of the training set, held out of the "
                                   "teacher's training, fits the temperature; ECE (15 bins) and NLL are measured on "
                                   "the test set, so these teachers train on 90 % of the data, not Table 1's "
                                   "teachers", {"holdout": 0.1}),
                            TINY_CHOICE)),
        Experiment("soteacher/table4", "Student fidelity: top-1 agreement between KD student and teacher",
                   (_soteacher_cifar("cifar", "soteacher-table4-cifar", ablations=False),
                    _soteacher_tiny("tiny", "soteacher-table4-tiny", ablations=False)),
                   _t4_cell, notes="The runs of Tables 1 and 2 (Tiny-ImageNet): nothing new is trained after them.",
                   choices=(TINY_CHOICE,)),
        Experiment("soteacher/table6", "13 distillation methods with standard and SoTeacher teachers "
                   "(SoTeacher protocol: beta halved for SoTeacher teachers)",
                   (_part("cifar", SOTEACHER_CIFAR_PAIRS, "soteacher-table6", dataset="cifar100",
                          teachers={"standard": "standard", "soteacher": soteacher(1e-5)},
                          students=_methods(FEATURE_13), protocol="soteacher", runs="soteacher/cifar100"),),
                   method_grid_cell(one("cifar"), best_of=FEATURE_13)),
        Experiment("soteacher/table7", "KD from teachers trained with the App. I regularisers (WRN-40-2 -> "
                   "WRN-40-1)", (_t7_study(),), _t7_cell,
                   choices=(Choice("row", "l2 (5e-4) is the standard teacher: SGD's weight decay 5e-4 on every "
                                   "parameter is that l2 penalty, and the paper's row equals Standard's cell for cell "
                                   "(73.73 +- 0.13 / 76.38 +- 0.13); kdlab trains no separate l2 teacher"),
                            Choice("silent", "AugMix: k = 3 chains (width); its JSD weight 12 and severity 3 are "
                                   "AugMix's own defaults (the row gives alpha and k only)", {"method.name": "augmix"},
                                   ("method.jsd_weight", "method.severity")),
                            Choice("silent", "l1 (1e-5): the penalty on convolution and linear weights on top of the "
                                   "recipe's SGD weight decay 5e-4 (the text does not say it was turned off)",
                                   {"method.name": "l1"}))),
        Experiment("soteacher/fig1", "Effect of lambda_LR, lambda_CR_max and the CR schedule on teacher and "
                   "student (Tiny-ImageNet; App. Fig. 1)", (_sweeps_soteacher(),), None, figure="sweeps",
                   notes="A figure: the paper prints no values, so kdlab prints its own sweep tables and draws "
                         "figures/sweeps.png.",
                   choices=(Choice("silent", "the swept grids (lambda_LR 1e-7 to 1e-4, lambda_CR_max 0.5 to 4, the "
                                   "four schedules): the text names the parameters, not their values",
                                   {"method.name": "soteacher"},
                                   ("method.lambda_lr", "method.lambda_cr_max", "method.schedule")),
                            TINY_CHOICE)),
        Experiment("soteacher/early_fig1", "Students distilled from teacher checkpoints every 10 epochs "
                   "(early version, Fig. 1)", (_trajectory(),), None, figure="trajectory",
                   notes="A figure without printed values; the student of the last checkpoint is Table 1's KD "
                         "student.",
                   choices=(Choice("silent", "the pair and the method are not stated: WRN-40-2 -> WRN-40-1 (the "
                                   "first pair of Table 1, the pair of App. I) with KD (SoTeacher protocol)"),)),
        Experiment("sftn/table1", "Standard vs SFTN teachers, 12 methods, homogeneous pairs (CIFAR-100)",
                   (_sftn_grid("t1", "sftn-table1", SFTN_T1_PAIRS),), method_grid_cell(one("t1"))),
        Experiment("sftn/table2", "Standard vs SFTN teachers, 12 methods, heterogeneous pairs (CIFAR-100)",
                   (_sftn_grid("t2", "sftn-table2", SFTN_T2_PAIRS),), method_grid_cell(one("t2"))),
        Experiment("sftn/table3", "Standard vs SFTN teachers on ImageNet (top-1/top-5), ResNet50 -> ResNet34",
                   (_sftn_grid("imagenet", "sftn-table3", (("imagenet_resnet50-imagenet_resnet34", "imagenet_resnet50",
                                             "imagenet_resnet34"),), ("kd", "fitnet", "sp", "crd", "ofd"),
                               dataset="imagenet", lambda_kl=1.0, seeds=(0,), runs="sftn/imagenet"),),
                   method_grid_cell(one("imagenet"), best_of=("kd", "fitnet", "sp", "crd", "ofd")),
                   choices=(ONE_RUN,)),
        Experiment("sftn/table4", "SFTN against collaborative (DML, KDCL) and curriculum (RCO) learning, "
                   "difference to the student alone", _sftn_t4_parts(), _t4_sftn_cell,
                   choices=(Choice("silent", "DML and KDCL train the student with one peer of the teacher's "
                                   "architecture: the paper does not name the peer", {"method.name": ("dml", "kdcl")},
                                   ("method.peer",)),
                            Choice("silent", "RCO-EEI-4: 4 anchors over 960 epochs in one run, the learning rate "
                                   "decayed at 600 / 720 / 840 (the standard decays at the same fractions of "
                                   "'240 x 4 epochs')", {"label": "rco_eei_4"}, ("schedule.milestones",)),
                            Choice("row", "SFTN-4: not reproducible, the paper does not say how SFTN spends its "
                                   "240 x 4 epochs"))),
        Experiment("sftn/table5", "Effect of the SFTN branch temperature tau~ (lambda_KL 1)",
                   (_sweep_sftn("sftn-table5", "tau", [1, 5, 10, 15, 20], standard=False),),
                   _sweep_cell("tau", lambda r: int(r.removeprefix("tau_"))),
                   facts=_sweep_facts("SFTN Table 5", "tau", [1, 5, 10, 15, 20]),
                   choices=(Choice("silent", "lambda_KL 1, which the table does not state: its tau~ = 1 row equals "
                                   "Table 6's lambda_KL = 1 row cell for cell (and not Table 1's lambda_KL 3)",
                                   {"method.name": "sftn"}, ("method.lambda_kl",)),)),
        Experiment("sftn/table6", "Effect of the SFTN branch KL weight lambda_KL (tau~ 1)",
                   (_sweep_sftn("sftn-table6", "lambda_kl", [1, 3, 6, 10], standard=True),),
                   _sweep_cell("lambda_kl", lambda r: int(r.removeprefix("lambda_kl_"))),
                   facts=_sweep_facts("SFTN Table 6", "lambda_kl", [1, 3, 6, 10])),
        Experiment("sftn/table7", "Branch capacity: SFTN teachers trained with other student branches",
                   _sftn_t7_parts(), _t7_sftn_cell),
        Experiment("sftn/table8", "Training time of standard and SFTN teachers, and SFTN from a pretrained "
                   "teacher", _sftn_t8_parts(), _t8_cell, digits=0,
                   notes="Seconds of training (kdlab's train_time, on your hardware; the paper's on theirs): "
                         "compare the ratios.",
                   choices=(FT_CHOICE,
                            Choice("silent", "the 'Student' column: the KD student of the standard teacher, trained "
                                   "on its own (group_size 1: a student reused from a study that trained it in a "
                                   "group shows its share of the group's time, summary group_size > 1)",
                                   {"kind": "student", "method.name": "kd"}))),
        Experiment("sftn/table9", "SFTN fine-tuned from a pretrained teacher (SFTN-FT), resnet32x4 -> "
                   "ShuffleV2", (_sftn_t9_part(),),
                   method_grid_cell(one("main"), best_of=("kd", "sp", "ft", "crd", "sskd", "ofd")),
                   choices=(FT_CHOICE,)),
        Experiment("sftn/table10", "Teacher-student similarity: KL divergence and linear CKA (resnet32x4 -> "
                   "ShuffleV2)", (_sftn_grid("t2", "sftn-table10", SFTN_T2_PAIRS[1:2], methods=T10_METHODS,
                                             alone=False),),
                   method_grid_cell(one("t2"), best_of=T10_METHODS, metric_default="kl_teacher_student"), digits=3,
                   notes="The runs of Table 2 (that pair and these methods).",
                   choices=(Choice("silent", "KL divergence KL(teacher || student) of the softmax at temperature 1, "
                                   "averaged over the test images; linear CKA of the pooled penultimate features of "
                                   "the first 5000 test images: the paper states neither", {"kind": "student"}),)),
        Experiment("sftn/fig3", "Best students of standard and SFTN teachers against the standard teacher",
                   (_sftn_grid("t1", "sftn-fig3-t1", SFTN_T1_PAIRS, alone=False),
                    _sftn_grid("t2", "sftn-fig3-t2", SFTN_T2_PAIRS, alone=False)),
                   _fig3_cell,
                   notes="The runs of Tables 1 and 2; the figure's bars are those tables' Best rows."),
    ]


EXPERIMENTS: dict[str, Experiment] = {e.id: e for e in _experiments()}


def get_experiment(exp_id: str) -> Experiment:
    if exp_id not in EXPERIMENTS:
        from kdlab.core.registry import hint

        h = hint(exp_id, EXPERIMENTS)
        raise ConfigError(f"reproduce: unknown experiment {exp_id!r}" + (f"; {h}" if h else "")
                          + " (kdlab reproduce --list prints them)")
    return EXPERIMENTS[exp_id]


__all__ = ["EXPERIMENTS", "Experiment", "Part", "get_experiment"]
