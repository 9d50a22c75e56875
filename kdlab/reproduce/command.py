"""``kdlab reproduce``: list the papers' experiments, plan one (``--dry-run``), or run it and print its table in the
paper's layout.

Running an experiment runs each of its studies like ``kdlab study`` (finished runs reused, interrupted ones
resumed; ``--workers`` / ``--launcher ray`` as there), then writes ``paper_table.md`` / ``.csv`` / ``.html`` into
``<out>/<paper>-<table>/``: every cell the paper prints, with kdlab's mean ± std over seeds and the difference.
Both papers leave unsaid which epoch they report; the main table uses the last epoch (the CRD benchmark's rule),
and the files hold the best-epoch table too.  Overrides (``key=value``) apply to every study of the experiment.

The dry run and the table list what the experiment states about itself (:mod:`kdlab.reproduce.statements`): the
settings that follow the authors' released code instead of the paper's text, kdlab's choices where the paper is
silent, and rows not trained as listed; a dry run with overrides also lists where they depart from the paper's
stated recipe.  ``written`` (``--as-written``) resolves the text's rules instead of the code's: the methods they
change train under labels of their own (``<label>-as-written``) beside the code's runs, which it shares, and the
table goes to ``<out>/<paper>-<table>-as-written/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kdlab.analysis.document import Table
from kdlab.config import DistillRunConfig, StudyConfig, TeacherRunConfig, dump_yaml, load_config
from kdlab.core import log as kdlog
from kdlab.core.checkpoint import atomic_write_text
from kdlab.core.errors import StudyFailedError
from kdlab.core.text import markdown_table
from kdlab.reproduce.catalogue import EXPERIMENTS, Experiment, get_experiment
from kdlab.reproduce.estimate import gpu_hours
from kdlab.reproduce.layouts import PartResult, paper_layout
from kdlab.reproduce.published import published_table
from kdlab.reproduce.published_teachers import Used, with_published
from kdlab.reproduce.statements import (
    KINDS,
    WRITTEN,
    Choice,
    as_written,
    departures,
    relevant,
    run_views,
    written_labels,
)
from kdlab.study import plan_study

DEFAULT_ROOT = "runs/reproduce"


@dataclass
class ReproduceResult:
    experiment: Experiment
    out_dir: Path
    tables: list[Table] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _rooted(study: dict[str, Any], root: str) -> dict[str, Any]:
    out = dict(study)
    for key in ("out_dir", "runs_dir"):
        out[key] = out[key].replace(DEFAULT_ROOT, root, 1)
    return out


Transform = Callable[[dict[str, Any]], dict[str, Any]]


def part_configs(exp: Experiment, overrides: list[str] = (), root: str = DEFAULT_ROOT,
                 transform: Transform | None = None, written: bool = False,
                 teacher_weights: str | Path | None = None, used: Used | None = None) -> list[StudyConfig]:
    """The experiment's study configs: rooted at ``root``, with the text's rules instead of the released code's
    (``written``: each code choice's ``as_written``), changed by ``transform`` (a function of the plain study
    config, e.g. a shrunk recipe for a smoke test) and then by the dotted ``overrides``; with ``teacher_weights``
    (a folder of published teachers) the standard teachers found there are not trained (``used`` says which)."""
    out = []
    for p in exp.parts:
        study = _rooted(p.study, root)
        if written:
            study = as_written(study, exp.all_choices)
        study = transform(study) if transform else study
        cfg = load_config(StudyConfig, study, list(overrides))
        if teacher_weights is not None:
            published = with_published(study, cfg, teacher_weights, used if used is not None else Used())
            if published is not study:
                cfg = load_config(StudyConfig, published, list(overrides))
        out.append(cfg)
    return out


def split_teacher_weights(overrides: list[str]) -> tuple[list[str], str | None]:
    """``teacher_weights=DIR`` taken out of an experiment's overrides (it is not a key of a study config)."""
    rest, folder = [], None
    for o in overrides:
        if o.startswith("teacher_weights="):
            folder = o.split("=", 1)[1]
        else:
            rest.append(o)
    return rest, folder


def statements(exp: Experiment, configs: list[StudyConfig], written: bool = False) -> list[str]:
    """What the experiment says about itself, in words: its choices that concern its runs, grouped by kind (with
    ``written``, the code choices as the text's rules), then any departure from the paper's stated recipe that no
    choice explains (what overrides made)."""
    plan = _unique_plan(configs)
    choices = relevant(exp.all_choices, run_views(plan))
    lines = []
    for kind, heading in KINDS.items():
        mine = [c for c in choices if c.kind == kind]
        if kind == "code" and written:
            heading = "as the paper's text has it (--as-written), instead of the released code"
        lines += [f"{heading.capitalize()}:"] + [f"- {_choice_text(c, written)}" for c in mine] if mine else []
    if exp.notes:
        lines.append(f"Note: {exp.notes}")
    found = departures(exp.all_facts, [c for c in exp.all_choices if not (written and c.as_written)], plan)
    if found:
        lines.append("Differs from the paper's stated recipe, with no statement (your overrides?):")
        lines += [f"- {d.text()}" for d in found]
    return lines


def _choice_text(c: Choice, written: bool) -> str:
    if written and c.as_written:
        return f"{c.text}; resolved here as written: {', '.join(f'{k}: {v}' for k, v in c.as_written.items())}"
    return c.text


def _unique_plan(configs: list[StudyConfig]) -> list[Any]:
    seen, plan = set(), []
    for cfg in configs:
        for run in plan_study(cfg):
            if run.run_dir not in seen:
                seen.add(run.run_dir)
                plan.append(run)
    return plan


def estimate(exp: Experiment, configs: list[StudyConfig] | None = None, grouped: bool = False
             ) -> tuple[int, float | None]:
    """(number of distinct runs, estimated GPU hours) of an experiment (``grouped``: with the students of one
    teacher trained in groups as its studies' ``group_size`` says, one teacher pass per batch)."""
    configs = configs or part_configs(exp)
    group_size = min(c.group_size for c in configs) if grouped else 1
    plan = _unique_plan(configs)
    teachers = {str(r.run_dir): r.config.get("model") for r in plan if r.kind == "teacher"}
    teachers.update({str(r.run_dir): r.config.get("student") for r in plan if r.kind != "teacher"})
    return len(plan), gpu_hours(plan, teachers, group_size)


def list_experiments() -> str:
    rows = []
    def hours_text(hours: float | None) -> str:
        return "?" if hours is None else (f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f} h")

    for exp in EXPERIMENTS.values():
        configs = part_configs(exp)
        n, alone = estimate(exp, configs)
        _, grouped = estimate(exp, configs, grouped=True)
        rows.append([exp.id, exp.measures, str(n), hours_text(alone), hours_text(grouped)])
    basis = ("GPU time: training FLOPs x the seconds per FLOP of SFTN Table 8's timed runs on the authors' GPU "
             "(within a factor 2; see kdlab.reproduce.estimate); grouped: the students of one teacher trained "
             "together, one teacher pass per batch (the default; --no-group turns it off). Runs: distinct runs at "
             "the paper's scale (3 seeds unless the paper has one); experiments of one paper share identical runs.")
    return markdown_table(["id", "measures", "runs", "est. GPU time", "grouped"], rows) + "\n\n" + basis


def dry_run(exp: Experiment, overrides: list[str] = (), root: str = DEFAULT_ROOT, written: bool = False,
            teacher_weights: str | Path | None = None) -> str:
    used = Used()
    configs = part_configs(exp, overrides, root, written=written, teacher_weights=teacher_weights, used=used)
    n, hours = estimate(exp, configs)
    _, grouped = estimate(exp, configs, grouped=True)
    lines = [f"{exp.id}: {exp.measures}", f"{n} runs, estimated {'?' if hours is None else f'{hours:.1f}'} GPU hours "
             f"({'?' if grouped is None else f'{grouped:.1f}'} with the students of a teacher in groups)"]
    if written:
        code = {r.run_dir for r in _unique_plan(part_configs(exp, overrides, root))}
        shared = [r for r in _unique_plan(configs) if r.run_dir in code]
        lines.append(f"{len(shared)} of them are the released code's variant's runs too (trained once, shared)")
    lines.append("")
    lines += statements(exp, configs, written)
    if used.statement():
        lines.append(used.statement())
    for part, cfg in zip(exp.parts, configs):
        plan = plan_study(cfg)
        lines.append(f"\n## study {cfg.name} ({part.name}): {len(plan)} runs in {cfg.runs_dir or cfg.out_dir}")
        for run in plan:
            schema = TeacherRunConfig if run.kind == "teacher" else DistillRunConfig
            resolved = load_config(schema, run.config).model_dump(mode="json")
            lines.append(f"\n### {run.kind} {run.run_dir}\n" + dump_yaml(resolved).rstrip())
    return "\n".join(lines)


def render(exp: Experiment, parts: dict[str, PartResult], best: bool = False, written: bool = False,
           note: str | None = None) -> Table:
    """The experiment's table in the paper's layout (``best``: every accuracy at its best epoch; ``written``: runs
    made with the text's rules), with the experiment's statements under it (``note``: already worded)."""
    table = published_table(exp.paper, exp.table_id)
    if best:
        parts = {k: replace(p, metric_alias={"top1": "best_top1"}) for k, p in parts.items()}
    epoch = f"best epoch {best_selection(parts)}" if best else "last epoch"
    variant = ", the paper's text where the released code differs" if written else ""
    title = f"{exp.id}: {table.title} (kdlab: accuracies at the {epoch}{variant})"
    if note is None:
        note = "\n\n".join(statements(exp, [p.config for p in parts.values()], written))
    return paper_layout(table, lambda r, c: exp.cell(parts, r, c), exp.digits, title=title, note=note)


def best_selection(parts: dict[str, PartResult]) -> str:
    """How the runs' best epochs were chosen, in words: ``chosen on test`` (the runs had no validation split:
    the test split chose the epoch it reports, which overstates it), ``chosen on validation``
    (``data.val_fraction``), or both when the runs differ."""
    splits = {_selected_on(r) for p in parts.values() for r in p.records} or {"test"}
    words = [{"val": "validation"}.get(s, s) for s in sorted(splits, reverse=True)]  # val first
    return "chosen on " + " or ".join(words) + (" (per run: selected_on)" if len(words) > 1 else "")


def _selected_on(record: Any) -> str:
    on = record.get("selected_on")
    return on if on in ("val", "test") else "test"  # runs from before the key existed chose on test


def reproduce(exp_id: str, overrides: list[str] = (), workers: int = 1, launcher: str = "local",
              ray_options: dict[str, Any] | None = None, root: str = DEFAULT_ROOT,
              log: Callable[[str], None] | None = None, transform: Transform | None = None,
              report: bool = True, group_size: int | None = None, allow_failures: bool = False,
              written: bool = False, teacher_weights: str | Path | None = None,
              gpus_per_run: float | None = None, slurm_options: dict[str, Any] | None = None) -> ReproduceResult:
    """Run an experiment's studies and write its table in the paper's layout (``report``: also each study's
    report and figures; ``group_size``: instead of each study's, 1 trains every student on its own; ``written``:
    the text's rules where the released code differs; ``teacher_weights``: a folder of published teachers, see
    :mod:`kdlab.reproduce.published_teachers`; ``gpus_per_run``: as
    :func:`~kdlab.analysis.study_command.run_study`).  When runs fail the table of the others is still written,
    then :class:`~kdlab.core.errors.StudyFailedError` is raised, unless ``allow_failures`` (``failed`` lists them)."""
    from kdlab.analysis.study_command import run_study

    log = log or kdlog.info
    exp = get_experiment(exp_id)
    used = Used()
    configs = part_configs(exp, overrides, root, transform, written, teacher_weights, used)
    if used.statement():
        log(used.statement())
    out = Path(root) / (exp.id.replace("/", "-") + (WRITTEN if written else ""))
    results: dict[str, PartResult] = {}
    failed: list[str] = []
    for part, cfg in zip(exp.parts, configs):
        res = run_study(cfg, workers=workers, launcher=launcher, ray_options=ray_options, log=log,
                        report=report or exp.cell is None, group_size=group_size,
                        allow_failures=True, gpus_per_run=gpus_per_run, slurm_options=slurm_options)
        failed += res.failed
        labels = written_labels(part.study, exp.all_choices) if written else {}
        results[part.name] = PartResult(cfg, res.records, part.paper_pairs, labels=labels)
    result = ReproduceResult(exp, out, failed=failed)
    if exp.cell is None:  # a figure: the study's own tables and figures
        log(f"{exp.id}: a figure; see the report of each study: "
            + ", ".join(str(Path(c.out_dir) / "report.html") for c in configs))
        return result if allow_failures else check_reproduced(result)
    note = "\n\n".join(statements(exp, configs, written) + ([used.statement()] if used.statement() else []))
    last = render(exp, results, written=written, note=note)
    best = render(exp, results, best=True, written=written, note=note)
    same = [[str(c) for c in r] for r in last.rows] == [[str(c) for c in r] for r in best.rows]
    result.tables = [last] if same else [last, best]  # tables without accuracies have one version
    md = "\n\n".join(t.to_markdown() for t in result.tables) + "\n"
    atomic_write_text(out / "paper_table.md", md)
    atomic_write_text(out / "paper_table.csv", "".join(
        f"# {t.title}\n{t.to_csv()}" for t in result.tables))
    atomic_write_text(out / "paper_table.html", "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
                      f"{exp.id}</title></head><body>\n" + "\n".join(t.to_html() for t in result.tables)
                      + "\n</body></html>\n")
    log(f"{exp.id}: table in {out / 'paper_table.md'}")
    return result if allow_failures else check_reproduced(result)


def check_reproduced(result: ReproduceResult) -> ReproduceResult:
    if result.failed:
        raise StudyFailedError(f"{len(result.failed)} run(s) failed; first: {result.failed[0]}", result)
    return result


__all__ = ["ReproduceResult", "dry_run", "estimate", "list_experiments", "render", "reproduce", "statements"]
