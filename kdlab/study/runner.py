"""``kdlab study``: plan the runs of a study, execute what is missing, write the tables and records.

Outputs under ``out_dir``: ``study.yaml`` (the resolved config) and ``runs.json`` (every planned run's labels and
folders, see :mod:`kdlab.study.records`), both written when the study starts; ``results.csv`` (one row per run:
labels, the summary's metrics and the run folder relative to ``out_dir``), ``timings.csv`` (per run its
``train_time`` and ``group_size``: how it was scheduled, which differs from one execution to the next, so that
``results.csv`` repeats byte for byte), ``results.md`` (the tables), and the run folders (see
:mod:`kdlab.study.plan`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import log as kdlog
from ..config import StudyConfig, dump_yaml, load_config
from ..engine.checkpoint import atomic_write_text
from ..errors import ConfigError, KdlabError, StudyFailedError
from ..methods import needs_teacher
from .execute import Outcome, execute
from .plan import PlannedRun, arch_label, data_label, pair_label, plan_study
from .records import LABEL_COLUMNS, RunRecord, write_runs_file
from .table import Document, to_csv
from .tables import study_tables

METRIC_COLUMNS = ["top1", "top5", "nll", "ece", "nll_ts", "ece_ts", "temperature", "best_top1", "best_epoch",
                  "teacher_top1", "teacher_nll", "teacher_ece", "teacher_pstar_l1_train", "teacher_pstar_l1_test",
                  "agreement", "kl_teacher_student", "cka_teacher_student", "pstar_l1_train", "pstar_l1_test",
                  "params", "run_dir"]
TIMING_COLUMNS = ["train_time", "group_size", "run_dir"]


@dataclass
class StudyResult:
    out_dir: Path
    records: list[RunRecord]
    table: str  # results.md's tables as markdown (``tables.to_markdown()``)
    ran: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)
    tables: Document = field(default_factory=Document)  # the tables themselves (``to_html()``, ``.tables``)


def run_study(config: Any, overrides: list[str] = (), log: Callable[[str], None] | None = None,
              workers: int = 1, launcher: str = "local", ray_options: dict[str, Any] | None = None,
              report: bool = True, group_size: int | None = None, allow_failures: bool = False) -> StudyResult:
    """Run what is missing of a study and write its results (and with ``report`` its figures, report.md and
    report.html); returns the records and the markdown tables.

    Finished runs are reused and interrupted ones resume, so calling this again with the same config continues
    the study.  When runs fail, the results of the others are still written, then :class:`StudyFailedError`
    is raised (its ``result`` holds them); with ``allow_failures`` the result is returned and its ``failed``
    lists the runs that failed, each with its cause.

    ``launcher``: ``local`` (in this process, or ``workers`` processes) or ``ray`` (one Ray task per run or group
    of runs); ``group_size``: instead of the config's (1: every student on its own).
    """
    log = log or kdlog.info
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: must be a whole number >= 1, got {workers!r}")
    cfg = load_config(StudyConfig, config, overrides)
    out = Path(cfg.out_dir)
    plan = plan_study(cfg)
    check_buildable(plan)
    changed = changed_runs(plan)
    if changed:  # refuse before anything is trained or rewritten (study.yaml, results) under the old runs
        raise ConfigError(f"{len(changed)} run(s) in {out} were trained with other settings, e.g. {changed[0]}; "
                          "choose another out_dir, or move those runs away to train them anew")
    check_same_study(out, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", dump_yaml(cfg))
    write_runs_file(plan, out)  # what `kdlab report` reads back: the plan's labels and folders of every run
    t0 = time.perf_counter()
    outcomes = execute(plan, workers, log, launcher, ray_options,
                       group_size=cfg.group_size if group_size is None else group_size)
    result = write_results(cfg, outcomes, log, time.perf_counter() - t0)
    if report:
        write_report_logged(out, log)
    if not allow_failures:
        check_no_failures(result)
    return result


def check_buildable(plan: list[PlannedRun]) -> None:
    """Validate every run's config, and build the teachers whose method depends on the pair (SFTN's student
    branches), before anything trains: a run that cannot start is a config error now, not after every other run
    of the study has trained."""
    from ..config.schema import DistillRunConfig, TeacherRunConfig
    from ..data import load_dataset
    from ..methods import build_teacher_objective
    from ..models import build_model

    for run in plan:  # every run's own config validates (its schema's cross-field checks included)
        load_config(TeacherRunConfig if run.kind == "teacher" else DistillRunConfig, run.config)
    seen = set()
    for run in plan:
        method = run.config.get("method") or {}
        if run.kind != "teacher" or method.get("name") != "sftn" or method.get("pretrained"):
            continue
        key = repr((run.config["model"], method, run.config["data"]))
        if key in seen or (run.run_dir / "summary.json").exists():
            continue
        seen.add(key)
        cfg = load_config(TeacherRunConfig, run.config)
        data = load_dataset(cfg.data, cfg.holdout)
        model = build_model(cfg.model.name, cfg.model.params, data.num_classes, data.input_shape)
        try:
            build_teacher_objective(cfg.method, model, data, None, cfg.train.epochs)
        except ConfigError as e:
            raise ConfigError(f"teacher {run.teacher_label} of pair {run.pair or run.arch}: {e}") from None


def check_same_study(out: Path, name: str) -> None:
    """One study's files (study.yaml, results, report) per folder: a second study there would overwrite them.
    The same study again (more seeds, other methods) is its continuation; studies share runs through runs_dir."""
    path = out / "study.yaml"
    if not path.is_file():
        return
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        old = {}  # a damaged study.yaml is rewritten: it is a copy of the config, not a result
    other = old.get("name") if isinstance(old, dict) else None
    if other is not None and other != name:
        raise ConfigError(f"{out} holds the study {other!r}, this is {name!r}: its study.yaml, results and report "
                          "would be overwritten; choose another out_dir (runs_dir: <folder> shares runs between "
                          "studies)")


def changed_runs(plan: list[PlannedRun]) -> list[str]:
    """Planned runs whose folder already holds a run with other settings, each as 'folder (first difference)'."""
    from ..config.schema import DistillRunConfig, TeacherRunConfig
    from ..errors import RunFolderError
    from ..runs import settings_differences

    out = []
    for run in plan:
        if not (run.run_dir / "config.yaml").is_file():
            continue
        schema = TeacherRunConfig if run.kind == "teacher" else DistillRunConfig
        try:
            diff = settings_differences(run.run_dir, load_config(schema, run.config).model_dump(mode="json"))
        except RunFolderError:
            continue  # the run itself reports an unreadable folder
        if diff:
            out.append(f"{run.run_dir} ({diff[0]})")
    return out


def write_report_logged(out: Path, log: Callable[[str], None]) -> None:
    from ..report import write_report  # matplotlib is imported only when a report is written

    try:
        _, html = write_report(out)
        log(f"report in {html} (figures in {out / 'figures'})")
    except KdlabError as e:  # e.g. every run failed: the study's own failure report says more
        log(f"report not written: {e}")


def write_results(cfg: StudyConfig, outcomes: list[Outcome], log: Callable[[str], None],
                  seconds: float = 0.0) -> StudyResult:
    out = Path(cfg.out_dir)
    records = [RunRecord.from_run(o.run, o.summary) for o in outcomes if o.summary is not None]
    failed = [f"{o.run.run_dir}: {o.error}" for o in outcomes if o.error]
    tables = render_tables(cfg, records)
    table = tables.to_markdown()
    rows = [r.row(relative_to=out) for r in records]
    atomic_write_text(out / "results.csv", to_csv(rows, LABEL_COLUMNS + METRIC_COLUMNS))
    atomic_write_text(out / "timings.csv", to_csv(rows, LABEL_COLUMNS + TIMING_COLUMNS))
    atomic_write_text(out / "results.md", f"# {cfg.name}\n\n{table}\n")
    ran = sum(1 for o in outcomes if o.summary is not None and not o.reused)
    reused = sum(1 for o in outcomes if o.reused)
    log(f"study {cfg.name}: {ran} runs trained, {reused} reused, {len(failed)} failed, {seconds:.0f}s; "
        f"results in {out}/results.md")
    for f in failed:
        log(f"  failed: {f}")
    return StudyResult(out, records, table, ran, reused, failed, tables)


def render_tables(cfg: StudyConfig, records: list[RunRecord]) -> Document:
    """The study's tables (caption, per pair a heading and its tables) as a :class:`Document`: ``results.md`` is
    its markdown, the report shows the same objects as HTML.  The main tables hold the configured method labels;
    sweep variants and trajectory students have their own tables and figures (``kdlab report``)."""
    done = {(r.kind, r.method_label) for r in records}
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
    caption = (f"{cfg.data.name}: seeds {list(cfg.seeds)}; test top-1 % at the last epoch; held-out fraction "
               f"{cfg.holdout} for temperature scaling")
    return study_tables(records, pairs, teacher_labels, alone, distill, caption)


def check_no_failures(result: StudyResult) -> None:
    if result.failed:
        raise StudyFailedError(f"{len(result.failed)} of {len(result.failed) + len(result.records)} run(s) of "
                               f"the study failed; first: {result.failed[0]}", result)


__all__ = ["StudyResult", "check_no_failures", "plan_study", "run_study"]
