"""From a study config to the list of runs it needs, each with its folder, config and the runs it waits for.

Layout under ``runs_dir`` (default ``out_dir``)::

    teachers/<teacher arch>/<teacher label>/seed<k>/
    students/<teacher arch>--<student arch>/<teacher label>/<method label>/seed<k>/   distilled students
    students/<student arch>/<method label>/seed<k>/        students without a teacher ('none', online methods)

A teacher architecture's teachers are trained once per (method, seed) and shared by all pairs that use it.
Sweeps add method variants labelled ``<label>[<param>=<value>]``; the trajectory adds students labelled
``<label>@<epoch>`` distilled from the teacher's ``epoch_XXX`` checkpoints, except at the teacher's last epoch when
the students distil from its ``last`` checkpoint: there the plain ``<label>`` student is the trajectory's point.
A pair with an ``assistant`` (TAKD) adds ``assistants/<teacher arch>--<assistant arch>/<teacher label>/seed<k>/``,
distilled from the teacher, and its students learn from the assistant (pair key
``<teacher>--<assistant>--<student>``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.config.components import Component
from kdlab.config.schema import PairConfig, StudyConfig
from kdlab.core.checkpoint import epoch_checkpoint_name
from kdlab.core.errors import ConfigError
from kdlab.core.registry import MODELS
from kdlab.methods import needs_teacher
from kdlab.methods.protocols import apply_protocol, teacher_kind
from kdlab.models.hub import is_hub_location


@dataclass
class PlannedRun:
    kind: str  # teacher | assistant | student
    pair: str | None  # "<teacher arch>--<student arch>" for distilled students, else None
    arch: str  # the trained model's architecture label
    teacher_label: str | None
    method_label: str
    seed: int
    run_dir: Path
    config: dict[str, Any]
    needs: list[Path] = field(default_factory=list)  # run folders that must be finished first
    info: dict[str, Any] = field(default_factory=dict)  # sweep / trajectory facts for tables and figures


MAX_LABEL = 60  # characters of a derived model label (and so of its folder name)


def slug(text: str) -> str:
    """A folder-safe label: resnet_cifar(depth=8, filters=[32, 32]) -> resnet_cifar-depth=8-filters=32-32.  Only
    letters, digits and ``._=+-`` remain, which every file system and shell takes as they are."""
    s = re.sub(r"[\[\]'\"{}]", "", text)
    s = re.sub(r"[^A-Za-z0-9._=+-]+", "-", s).strip("-.")
    return re.sub(r"-+", "-", s) or "-"


def arch_label(spec) -> str:
    """The short name of a model in tables, figures and folder names: its ``label``, else its name with the
    parameters that differ from their defaults, e.g. ``mlp(hidden=[16])``; when that is longer than
    :data:`MAX_LABEL`, the name (a module's class name) and a hash of the full spec, e.g. ``SmallCNN-3fa9c2``
    (the full spec stays in each run's config.yaml)."""
    if getattr(spec, "label", None):
        return spec.label
    full = MODELS.describe(spec.name, spec.params)
    if len(full) <= MAX_LABEL:
        return full
    base = spec.name
    target = spec.params.get("target") if isinstance(spec.params.get("target"), str) else None
    if target:  # module(target=pkg.mod:Class, ...) -> Class
        base = re.split(r"[:.]", target)[-1] or base
    digest = hashlib.sha1(json.dumps(spec.without_label(), sort_keys=True, default=str).encode()).hexdigest()
    return f"{base[:MAX_LABEL - 7]}-{digest[:6]}"


def pair_label(pair: PairConfig) -> str:
    """The folder/record key of a pair: its ``label``, else teacher--student, or teacher--assistant--student for
    TAKD."""
    if getattr(pair, "label", None):
        return slug(pair.label)
    parts = [pair.teacher] + ([pair.assistant] if pair.assistant is not None else []) + [pair.student]
    return "--".join(slug(arch_label(p)) for p in parts)


def expand_sweeps(methods: dict[str, Any], sweeps, role: str, raw: bool = False
                  ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Method labels -> plain specs (``raw``: as the user wrote them), with the sweep variants added; and
    label -> {param, value, base}."""
    out = {lbl: dict(spec.raw) if raw and spec.raw else spec.model_dump() for lbl, spec in methods.items()}
    info: dict[str, dict] = {}
    for sw in sweeps:
        if sw.role != role:
            continue
        base = out[sw.method]
        for v in sw.values:
            if methods[sw.method].get(sw.param) == v:  # the base configuration itself: no duplicate run
                info.setdefault(sw.method, {"param": sw.param, "value": v, "base": sw.method})
                continue
            lbl = f"{sw.method}[{sw.param}={v}]"
            out[lbl] = {**base, sw.param: v}
            info[lbl] = {"param": sw.param, "value": v, "base": sw.method}
    return out, info


def plan_study(cfg: StudyConfig) -> list[PlannedRun]:
    if not cfg.pair_list():
        raise ConfigError("pairs: the list is empty; a study needs at least one teacher/student pair")
    taught = [lbl for lbl, spec in cfg.student.methods.items() if needs_teacher(spec.name)]
    if taught and not cfg.teacher.methods:
        raise ConfigError(f"teacher.methods: empty, but student method {taught[0]!r} distils from a teacher")
    sweep = next((sw for sw in cfg.sweeps if sw.role == "data"), None)
    plan = _plan(cfg) if sweep is None else _plan_data_sweep(cfg, sweep)
    if not plan:
        raise ConfigError("the study has no runs: give teacher.methods or student.methods")
    return plan


def data_label(label: str, sweep, value) -> str:
    """A method label at one value of a data sweep: ``<label>[<param>=<value>]``."""
    return f"{label}[{sweep.param}={value}]"


def _plan_data_sweep(cfg: StudyConfig, sweep) -> list[PlannedRun]:
    """The study once per value of a data set parameter, under ``<param>=<value>/``; labels get ``[<param>=<value>]``
    (teachers, and students without a teacher; a distilled student is told apart by its teacher's label) and
    the records ``sweep_param: data.<param>``."""
    from kdlab.core.registry import DATASETS

    out = Path(cfg.runs_dir or cfg.out_dir)
    entry = DATASETS.get(cfg.data.name)
    plan: list[PlannedRun] = []
    for v in sweep.values:
        params = entry.validate({**cfg.data.params, sweep.param: v}).model_dump(mode="json")
        update = {"data": Component(name=cfg.data.name, params=params, val_fraction=cfg.data.val_fraction),
                  "sweeps": [], "runs_dir": str(out / slug(f"{sweep.param}={v}"))}
        if sweep.same_steps:
            factor = max(sweep.values) / v
            update |= {"teacher": _longer(cfg.teacher, factor), "student": _longer(cfg.student, factor)}
        sub = cfg.model_copy(update=update)
        for run in _plan(sub):
            base = run.teacher_label if run.kind == "teacher" else run.method_label
            if run.teacher_label is not None:
                run.teacher_label = data_label(run.teacher_label, sweep, v)
            if run.kind == "teacher":
                run.method_label = run.teacher_label
            elif run.pair is None:
                run.method_label = data_label(run.method_label, sweep, v)
            run.info = {**run.info, "param": f"data.{sweep.param}", "value": v, "base": base}
            plan.append(run)
    return plan


def check_folder_name(label: str, what: str) -> None:
    """A method label is a folder name of its runs: one safe path component."""
    bad = next((c for c in label if c in '/\\:*?"<>|' or ord(c) < 32), None)
    if bad is not None or label.strip() in ("", ".", "..") or label.startswith(".") or len(label) > 100:
        why = f"contains {bad!r}" if bad is not None else "is empty, hidden, '.'/'..' or longer than 100 characters"
        raise ConfigError(f"{what}: the label {label!r} {why}; a label names its runs' folder: use letters, digits "
                          "and ._-=+[] ")


def _check_labels(pairs: list[PairConfig]) -> None:
    """A label (and so a folder) must name one model: two architectures under one name would share runs."""
    seen: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        for spec in [pair.teacher, pair.student] + ([pair.assistant] if pair.assistant is not None else []):
            name = slug(arch_label(spec))
            if seen.setdefault(name, spec.without_label()) != spec.without_label():
                raise ConfigError(f"pairs: the label {arch_label(spec)!r} names two different models "
                                  f"({seen[name]} and {spec.without_label()}); give them different labels")
    named: dict[str, Any] = {}
    for p in pairs:  # the same pair twice is harmless (its runs are planned once); two pairs under one name not
        models = tuple(m.without_label() if m is not None else None for m in (p.teacher, p.assistant, p.student))
        if named.setdefault(pair_label(p), models) != models:
            raise ConfigError(f"pairs: two different pairs are both named {pair_label(p)!r}; give them different "
                              "labels")


def _published_files(cfg: StudyConfig, pairs: list[PairConfig], teachers: dict[str, Any]) -> dict[str, str]:
    """teacher.published checked against the study: its label is a standard teacher of the study, each file's key
    names a teacher architecture of the pairs, and the file exists; returns architecture label -> file."""
    pub = cfg.teacher.published
    if pub is None:
        return {}
    if pub.label not in teachers or teachers[pub.label]["name"] != "standard":
        raise ConfigError(f"teacher.published.label: {pub.label!r} is not a standard teacher label of "
                          f"teacher.methods ({', '.join(teachers) or 'none'})")
    if cfg.student.teacher_checkpoint != "last":
        raise ConfigError(f"student.teacher_checkpoint: {cfg.student.teacher_checkpoint!r} names a checkpoint of a "
                          "trained teacher; a published teacher (teacher.published) is its weights file")
    for label, spec in teachers.items():
        if spec.get("pretrained") == pub.label:
            raise ConfigError(f"teacher.methods.{label}.pretrained: {pub.label!r} is a published weights file here; "
                              "give that file's run folder or train the label")
    archs = {}
    for p in pairs:
        archs[arch_label(p.teacher)] = arch_label(p.teacher)
        archs.setdefault(p.teacher.name, arch_label(p.teacher))
    out = {}
    for key, file in pub.weights.items():
        if key not in archs:
            raise ConfigError(f"teacher.published.weights.{key}: not a teacher architecture of the study's pairs "
                              f"({', '.join(sorted(set(archs.values())))})")
        if is_hub_location(file):
            out[archs[key]] = file
            continue
        path = Path(file).expanduser()
        if not path.is_file():
            raise ConfigError(f"teacher.published.weights.{key}: file {path} not found")
        out[archs[key]] = str(path.resolve())
    return out


def _longer(role, factor: float):
    """A study role whose runs take ``factor`` times as many epochs (milestones and intervals scaled alike)."""
    scale = lambda e: max(1, round(e * factor)) if e else e  # noqa: E731
    train, sched = role.train, role.schedule
    return role.model_copy(update={
        "train": train.model_copy(update={"epochs": scale(train.epochs), "eval_every": scale(train.eval_every),
                                          "save_every": scale(train.save_every)}),
        "schedule": sched.model_copy(update={"milestones": [scale(m) for m in sched.milestones],
                                             "warmup_epochs": scale(sched.warmup_epochs)})})


def _plan(cfg: StudyConfig) -> list[PlannedRun]:
    out = Path(cfg.runs_dir or cfg.out_dir)
    data = cfg.data.model_dump()
    teachers, t_info = expand_sweeps(cfg.teacher.methods, cfg.sweeps, "teacher")
    students, s_info = expand_sweeps(cfg.student.methods, cfg.sweeps, "student", raw=True)
    plan: list[PlannedRun] = []

    def distill_spec(mlabel: str, tlabel: str) -> dict[str, Any]:
        """The method config of label ``mlabel`` for a student of teacher ``tlabel``: the protocol's weights for
        that teacher's kind where the user left them open, then the study's per-teacher parameters."""
        base_label = s_info.get(mlabel, {}).get("base", mlabel)
        spec = apply_protocol(cfg.student.protocol, students[mlabel], teacher_kind(teachers[tlabel]["name"]))
        return {**spec, **cfg.student.by_teacher.get(base_label, {}).get(tlabel, {})}

    def protocol_of(spec: dict[str, Any]) -> dict[str, Any]:
        return {"protocol": cfg.student.protocol} if cfg.student.protocol and needs_teacher(spec["name"]) else {}

    def role_cfg(role, seed: int, run_dir: Path, lr: float | None = None, label: str | None = None
                 ) -> dict[str, Any]:
        optim_cfg, schedule_cfg, train_cfg = role.settings(label)
        optim = optim_cfg.model_dump()
        own = role.overrides.get(label) if label is not None else None
        if lr is not None and not (own and "lr" in own.optim):  # a pair's student_lr, unless the label sets its own
            optim["lr"] = lr
        train = train_cfg.model_dump()
        train["tracker_project"] = train["tracker_project"] or cfg.name  # the study's runs together in a tracker
        return {"seed": seed, "out_dir": str(run_dir), "data": data, "holdout": cfg.holdout, "optim": optim,
                "schedule": schedule_cfg.model_dump(), "train": train}

    planned: dict[Path, PlannedRun] = {}
    root = out.resolve()
    for what, labels in (("teacher.methods", teachers), ("student.methods", students)):
        for label in labels:
            check_folder_name(label, what)

    def add(run: PlannedRun) -> None:
        if not run.run_dir.resolve().is_relative_to(root):  # nothing a config names may write outside out_dir
            raise ConfigError(f"the run folder {run.run_dir} would lie outside {out}; check the labels")
        if run.run_dir in planned:
            if planned[run.run_dir].config != run.config:  # a shared run (a teacher, a student alone) asked twice
                from kdlab.runs.folder import config_differences

                diff = config_differences(planned[run.run_dir].config, run.config) or ["settings: -"]
                what = diff[0].split(":", 1)[0].rsplit(".", 1)[-1]
                raise ConfigError(f"pairs: the shared run {run.run_dir} would be trained with two different {what} "
                                  f"({diff[0]}), e.g. two student_lr for one student architecture; give those pairs "
                                  "the same value")
            return
        planned[run.run_dir] = run
        plan.append(run)

    pairs: list[PairConfig] = cfg.pair_list()
    _check_labels(pairs)
    # a teacher trained for one student (SFTN) is named by its student when another pair, or another study sharing
    # the run folder, may train one for another student
    multi = len(pairs) > 1 or cfg.runs_dir is not None

    def teacher_key(tlabel: str, s_arch: str) -> str:
        # a teacher trained for a particular student (SFTN's branches) is not shared with other pairs
        student_specific = "student" in teachers[tlabel] and teachers[tlabel]["student"] is None
        return f"{tlabel}-for-{slug(s_arch)}" if student_specific and multi else tlabel

    def trains(pair: PairConfig, tlabel: str) -> bool:
        """Whether the pair has teacher label ``tlabel`` (a sweep variant goes with its base label)."""
        return pair.teacher_methods is None or t_info.get(tlabel, {}).get("base", tlabel) in pair.teacher_methods

    published = _published_files(cfg, pairs, teachers)

    def published_file(pair: PairConfig, tlabel: str) -> str | None:
        """The published weights file standing for the pair's teacher of label ``tlabel`` (None: trained here)."""
        if cfg.teacher.published is None or tlabel != cfg.teacher.published.label:
            return None
        return published.get(arch_label(pair.teacher))

    teacher_runs: dict[tuple[str, str, int], PlannedRun] = {}
    for pair in pairs:
        t_arch, s_arch = arch_label(pair.teacher), arch_label(pair.student)
        for tlabel, tspec in teachers.items():
            if not trains(pair, tlabel) or published_file(pair, tlabel) is not None:
                continue
            spec = dict(tspec)
            if "student" in spec and spec["student"] is None:
                spec["student"] = pair.student.without_label()
            key = teacher_key(tlabel, s_arch)
            own = f"{slug(t_arch)}--{slug(s_arch)}" if key != tlabel else None  # trained for this pair only
            for seed in cfg.seeds:
                d = out / "teachers" / slug(t_arch) / key / f"seed{seed}"
                method, needs = spec, []
                ref = spec.get("pretrained")
                if isinstance(ref, str) and ref in teachers:  # "start from the study's <label> teacher"
                    ref_dir = out / "teachers" / slug(t_arch) / teacher_key(ref, s_arch) / f"seed{seed}"
                    method, needs = {**spec, "pretrained": str(ref_dir)}, [ref_dir]
                c = role_cfg(cfg.teacher, seed, d, label=t_info.get(tlabel, {}).get("base", tlabel)) | {
                    "model": pair.teacher.without_label(), "method": method}
                run = PlannedRun("teacher", own, t_arch, tlabel, tlabel, seed, d, c, needs,
                                 info=t_info.get(tlabel, {}))
                add(run)
                teacher_runs.setdefault((t_arch, key, seed), run)
    for pair in pairs:
        t_arch, s_arch = arch_label(pair.teacher), arch_label(pair.student)
        pair_key = pair_label(pair)

        def t_run_of(tlabel: str, seed: int, t_arch=t_arch, s_arch=s_arch) -> PlannedRun:
            return teacher_runs[(t_arch, teacher_key(tlabel, s_arch), seed)]

        def teacher_of(tlabel: str, seed: int, checkpoint: str, pair=pair) -> tuple[dict[str, Any], list[Path]]:
            """A student's teacher config and the runs it waits for: a teacher run of the study, or a published
            weights file (nothing to wait for)."""
            file = published_file(pair, tlabel)
            if file is not None:
                return {"model": pair.teacher.without_label(), "weights": file,
                        "weights_format": cfg.teacher.published.weights_format}, []
            t_run = t_run_of(tlabel, seed)
            return {"path": str(t_run.run_dir), "checkpoint": checkpoint}, [t_run.run_dir]

        if pair.assistant is not None:  # TAKD: the students' teacher is an assistant distilled from the teacher
            a_arch = arch_label(pair.assistant)
            assistants: dict[tuple[str, int], PlannedRun] = {}
            for tlabel in [t for t in teachers if trains(pair, t)]:
                for seed in cfg.seeds:
                    a_teacher, a_needs = teacher_of(tlabel, seed, cfg.student.teacher_checkpoint)
                    d = out / "assistants" / f"{slug(t_arch)}--{slug(a_arch)}" / tlabel / f"seed{seed}"
                    a_spec = apply_protocol(cfg.student.protocol, dict(pair.assistant_method.raw or
                                                                        pair.assistant_method.model_dump()),
                                            teacher_kind(teachers[tlabel]["name"]))
                    c = role_cfg(cfg.student, seed, d) | protocol_of(a_spec) | {
                        "student": pair.assistant.without_label(), "method": a_spec, "teacher": a_teacher}
                    run = PlannedRun("assistant", pair_key, a_arch, tlabel, "assistant", seed, d, c, a_needs)
                    add(run)
                    assistants[(tlabel, seed)] = run

            def source_of(tlabel: str, seed: int, a=assistants) -> tuple[dict[str, Any], list[Path]]:
                run = a[(tlabel, seed)]
                return {"path": str(run.run_dir), "checkpoint": cfg.student.teacher_checkpoint}, [run.run_dir]
        else:
            def source_of(tlabel: str, seed: int, of=teacher_of) -> tuple[dict[str, Any], list[Path]]:
                return of(tlabel, seed, cfg.student.teacher_checkpoint)
        for mlabel, mspec in students.items():
            base = {"student": pair.student.without_label(), "method": mspec}
            if not needs_teacher(mspec["name"]):
                for seed in cfg.seeds:
                    d = out / "students" / slug(s_arch) / mlabel / f"seed{seed}"
                    c = role_cfg(cfg.student, seed, d, pair.student_lr,
                                 s_info.get(mlabel, {}).get("base", mlabel)) | base
                    add(PlannedRun("student", None, s_arch, None, mlabel, seed, d, c, info=s_info.get(mlabel, {})))
                continue
            for tlabel in [t for t in teachers if trains(pair, t)]:
                # TAKD: the students learn from a KD-trained assistant, a standard teacher for the protocol
                spec = distill_spec(mlabel, tlabel) if pair.assistant is None else \
                    apply_protocol(cfg.student.protocol, mspec, "standard")
                for seed in cfg.seeds:
                    teacher, needs = source_of(tlabel, seed)
                    d = out / "students" / pair_key / tlabel / mlabel / f"seed{seed}"
                    c = role_cfg(cfg.student, seed, d, pair.student_lr,
                                 s_info.get(mlabel, {}).get("base", mlabel)) | base | protocol_of(spec) | {
                        "method": spec, "teacher": teacher}
                    add(PlannedRun("student", pair_key, s_arch, tlabel, mlabel, seed, d, c, needs,
                                   info=s_info.get(mlabel, {})))
        if cfg.trajectory is not None:
            tr = cfg.trajectory
            for tlabel in [t for t in tr.teachers or list(cfg.teacher.methods) if trains(pair, t)]:
                if published_file(pair, tlabel) is not None:
                    raise ConfigError(f"trajectory: teacher label {tlabel!r} is a published weights file, which has "
                                      "no checkpoints along training; leave it out of trajectory.teachers")
                mspec = distill_spec(tr.method, tlabel)
                last_epoch = t_run_of(tlabel, cfg.seeds[0]).config["train"]["epochs"]
                for epoch in range(tr.every, last_epoch + 1, tr.every):
                    for seed in cfg.seeds:
                        t_run = t_run_of(tlabel, seed)
                        mlabel = f"{tr.method}@{epoch}"
                        d = out / "students" / pair_key / tlabel / mlabel / f"seed{seed}"
                        teacher = {"path": str(t_run.run_dir), "checkpoint": epoch_checkpoint_name(epoch)}
                        c = role_cfg(cfg.student, seed, d, pair.student_lr, tr.method) | protocol_of(mspec) | {
                            "student": pair.student.without_label(), "method": mspec, "teacher": teacher}
                        info = {"trajectory_epoch": epoch, "base": tr.method}
                        if epoch == last_epoch and cfg.student.teacher_checkpoint == "last":
                            # the last checkpoint is the teacher the plain student distils from: that run is
                            # the trajectory's last point, not trained twice
                            plain = planned.get(out / "students" / pair_key / tlabel / tr.method / f"seed{seed}")
                            if plain is not None and plain.config == c | {
                                    "out_dir": str(plain.run_dir), "teacher": {**teacher, "checkpoint": "last"}}:
                                plain.info = {**plain.info, **info}
                                continue
                        add(PlannedRun("student", pair_key, s_arch, tlabel, mlabel, seed, d, c, [t_run.run_dir],
                                       info=info))
    return plan
