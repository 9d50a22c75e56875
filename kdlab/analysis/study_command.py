"""``kdlab study``: plan the runs of a study, execute what is missing, write the tables and records.

Outputs under ``out_dir``: ``study.yaml`` (the resolved config) and ``runs.json`` (every planned run's labels and
folders, see :mod:`kdlab.study.records`), both written when the study starts; ``results.csv`` (one row per planned
run: labels, the summary's metrics, the run folder relative to ``out_dir``, then ``status`` - finished, failed or
skipped (its teacher failed) - and ``reason``, the error's first line; a run that did not finish has no metrics),
``timings.csv`` (per finished run its ``train_time`` and ``group_size``: how it was scheduled, which differs from
one execution to the next, so that ``results.csv`` repeats byte for byte), ``results.md`` (the tables, after a line
naming the incomplete methods), ``failures.json`` (the runs that failed or were skipped, with why: what the report
reads), and the run folders (see :mod:`kdlab.study.plan`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.analysis.convergence import convergence_note
from kdlab.analysis.document import Document
from kdlab.analysis.tables import render_tables
from kdlab.config import StudyConfig, dump_yaml, load_config
from kdlab.core import log as kdlog
from kdlab.core.checkpoint import atomic_write_text
from kdlab.core.errors import ConfigError, KdlabError, StudyFailedError, interrupted_line, mark_reported
from kdlab.core.text import to_csv
from kdlab.engine.sinks import tensorboard_tag
from kdlab.engine.trackers import Trackers
from kdlab.runs.summary import RunSummary
from kdlab.study.execute import Outcome, execute, make_tasks, processes_per_run
from kdlab.study.plan import plan_study
from kdlab.study.records import LABEL_COLUMNS, RunRecord, incomplete, write_failures_file, write_runs_file
from kdlab.study.runner import build_problems, changed_runs, check_buildable, check_same_study
from kdlab.study.slurm import SlurmOptions, run_on_slurm

METRIC_COLUMNS = [*RunSummary.keys("column"), "run_dir"]
STATUS_COLUMNS = ["status", "reason"]  # finished | failed | skipped, and why a run did not finish
STUDY_CONTINUES = "the finished runs are kept and running the same study again continues it"


TIMING_COLUMNS = [*RunSummary.keys("timing"), "run_dir"]


@dataclass
class StudyResult:
    out_dir: Path
    records: list[RunRecord]
    table: str  # results.md's tables as markdown (``tables.to_markdown()``)
    ran: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)
    tables: Document = field(default_factory=Document)  # the tables themselves (``to_html()``, ``.tables``)
    unfinished: list[RunRecord] = field(default_factory=list)  # planned runs that failed or were skipped, with why


def run_study(config: Any, overrides: list[str] = (), log: Callable[[str], None] | None = None,
              workers: int = 1, launcher: str = "local", ray_options: dict[str, Any] | None = None,
              report: bool = True, group_size: int | None = None, allow_failures: bool = False,
              gpus_per_run: float | None = None, slurm_options: dict[str, Any] | None = None) -> StudyResult:
    """Run what is missing of a study and write its results (and with ``report`` its figures, report.md and
    report.html); returns the records and the markdown tables.

    Finished runs are reused and interrupted ones resume, so calling this again with the same config continues
    the study.  When runs fail, the results of the others are still written, then :class:`StudyFailedError`
    is raised (its ``result`` holds them); with ``allow_failures`` the result is returned and its ``failed``
    lists the runs that failed, each with its cause.  Interrupted (KeyboardInterrupt; under the ``kdlab``
    command SIGTERM too), it stops its worker processes, logs one line and raises the interrupt again.

    ``launcher``: ``local`` (in this process, or ``workers`` processes), ``ray`` (one Ray task per run or group
    of runs) or ``slurm`` (one Slurm job per run or group, ``slurm_options`` as :class:`kdlab.study.slurm.SlurmOptions`
    takes them); ``group_size``: instead of the config's (1: every student on its own); ``gpus_per_run``: GPUs of
    each run, trained as one process per GPU from 2 on (see :func:`kdlab.study.execute.processes_per_run`).
    """
    log = log or kdlog.info
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: must be a whole number >= 1, got {workers!r}")
    if launcher == "slurm":  # its errors before anything is planned or written
        slurm = SlurmOptions.of(slurm_options or {}, gpus_per_run)
    else:
        processes_per_run(launcher, gpus_per_run)
    cfg = load_config(StudyConfig, config, overrides)
    out = Path(cfg.out_dir)
    plan = plan_study(cfg)
    check_buildable(plan)
    for problem in build_problems(plan):  # once per cause; those runs fail (and are reported) when they start
        log(f"problem: {problem.line()}")
    changed = changed_runs(plan)
    if changed:  # refuse before anything is trained or rewritten (study.yaml, results) under the old runs
        raise ConfigError(f"{len(changed)} run(s) in {out} were trained with other settings, e.g. {changed[0]}; "
                          "choose another out_dir, or move those runs away to train them anew")
    check_same_study(out, cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", dump_yaml(cfg))
    write_runs_file(plan, out)  # what `kdlab report` reads back: the plan's labels and folders of every run
    t0 = time.perf_counter()
    group_size = cfg.group_size if group_size is None else group_size
    try:
        if launcher == "slurm":
            outcomes = run_on_slurm(plan, make_tasks(plan, group_size), log, slurm, out, f"kdlab-{cfg.name}")
        else:
            outcomes = execute(plan, workers, log, launcher, ray_options, group_size=group_size,
                               gpus_per_run=gpus_per_run)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM under the kdlab command: the workers are stopped by now
        log(interrupted_line(e, STUDY_CONTINUES))
        mark_reported(e)
        raise
    result = write_results(cfg, outcomes, log, time.perf_counter() - t0)
    if report:
        write_report_logged(out, log)
    log_to_trackers(cfg, out)
    if not allow_failures:
        check_no_failures(result)
    return result


def write_report_logged(out: Path, log: Callable[[str], None]) -> None:
    from kdlab.analysis.report import write_report

    try:
        _, html = write_report(out)
        log(f"report in {html} (figures in {out / 'figures'})")
    except KdlabError as e:  # e.g. every run failed: the study's own failure report says more
        log(f"report not written: {e}")


def log_to_trackers(cfg: StudyConfig, out: Path) -> None:
    """The study's tables, figures and report as artifacts of a tracker run of its own (named after ``out``, in
    the project of its runs), for the W&B and MLflow trackers its runs use; its id is kept in ``out``, so a study
    run again updates the same tracker run."""
    names = [t for t in dict.fromkeys([*cfg.teacher.train.trackers, *cfg.student.train.trackers])
             if t != "tensorboard"]
    if not names:
        return
    train = cfg.student.train
    trackers = Trackers(names, out, cfg.model_dump(mode="json"), train.tracker_project or cfg.name, train.mlflow_uri)
    trackers.start([], tensorboard_tag)
    files = [out / f for f in ("results.md", "results.csv", "report.md", "report.html")]
    trackers.artifacts([f for f in files + sorted((out / "figures").glob("*.png")) if f.is_file()], out)
    trackers.close(finished=True)


def write_results(cfg: StudyConfig, outcomes: list[Outcome], log: Callable[[str], None],
                  seconds: float = 0.0) -> StudyResult:
    out = Path(cfg.out_dir)
    every = [RunRecord.from_run(o.run, o.summary) if o.summary is not None else RunRecord.unfinished(o.run, o.error)
             for o in outcomes]
    records = [r for r in every if r.status == "finished"]
    failed = [f"{o.run.run_dir}: {o.error}" for o in outcomes if o.error]
    tables = render_tables(cfg, records, [r for r in every if r.status != "finished"])
    table = tables.to_markdown()
    rows = [r.row(relative_to=out) for r in every]  # every planned run, failed ones with empty metrics
    atomic_write_text(out / "results.csv", to_csv(rows, LABEL_COLUMNS + METRIC_COLUMNS + STATUS_COLUMNS))
    atomic_write_text(out / "timings.csv", to_csv([r.row(relative_to=out) for r in records],
                                                  LABEL_COLUMNS + TIMING_COLUMNS))
    write_failures_file(every, out)
    missing = incomplete(every)
    top = f"**Incomplete**: {'; '.join(missing)}.\n\n" if missing else ""
    unconverged = convergence_note(r.run_dir for r in records)
    top += f"**{unconverged.replace(':', '**:', 1)}\n\n" if unconverged else ""
    atomic_write_text(out / "results.md", f"# {cfg.name}\n\n{top}{table}\n")
    ran = sum(1 for o in outcomes if o.summary is not None and not o.reused)
    reused = sum(1 for o in outcomes if o.reused)
    log(f"study {cfg.name}: {ran} runs trained, {reused} reused, {len(failed)} failed, {seconds:.0f}s; "
        f"results in {out}/results.md")
    for f in failed:
        log(f"  failed: {f}")
    return StudyResult(out, records, table, ran, reused, failed, tables, [r for r in every if r.status != "finished"])


def check_no_failures(result: StudyResult) -> None:
    if result.failed:
        raise StudyFailedError(f"{len(result.failed)} of {len(result.failed) + len(result.records)} run(s) of "
                               f"the study failed; first: {result.failed[0]}", result)


__all__ = ["StudyResult", "check_no_failures", "plan_study", "run_study"]
