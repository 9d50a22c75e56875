"""The ``kdlab`` command: subcommands mapped to the plain functions of :mod:`kdlab.api`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlab.core.errors import ConfigError, KdlabError, Terminated, interrupted_line, was_reported
from kdlab.core.lifeline import tie_to_launcher
from kdlab.study.placement import RAY_RETRIES

# kdlab.config.describe's schemas (a test checks they agree), named here so that --help needs no pydantic import
SCHEMA_KINDS = ("teacher", "distill", "study", "eval")
GPUS_PER_RUN = ("GPUs of each run; from 2 on a run trains as one process per GPU, one DDP run (as torchrun "
                "--nproc_per_node=G). local: each worker owns G GPUs of CUDA_VISIBLE_DEVICES (worker k the k-th "
                "block of G, round robin), a whole number, default 1; ray: the GPUs each task reserves, default 0, "
                "a fraction of one GPU or a whole number; slurm: G GPUs of one node, one task per GPU, default 0")
EPILOG = ("Overrides are dotted keys: optim.lr=0.01 seed=3 train.epochs=5 method.T=2 'seeds=[0,1]'. "
          "Values use YAML syntax.")


def _int_at_least(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n

    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def _split_args(items: Sequence[str], need_config: bool) -> tuple[str | None, list[str]]:
    """First positional is the config file unless it looks like an override."""
    items = list(items)
    config = None
    if items and "=" not in items[0]:
        config = items.pop(0)
    if need_config and config is None:
        raise ConfigError("a config file is required as the first argument")
    bad = [a for a in items if "=" not in a]
    if bad:
        raise ConfigError(f"unexpected argument {bad[0]!r}: overrides look like key.path=value")
    return config, items


def _print_summary(title: str, summary: dict[str, Any], run_dir: Path) -> None:
    if not summary:  # a process other than rank 0 of a torchrun job
        return
    from kdlab.runs.summary import RunSummary  # a run has imported torch already

    keys = RunSummary.keys("printed")
    print(f"{title}: {run_dir}")
    for k in keys:
        if k in summary:
            v = summary[k]
            print(f"  {k:<20} {v:.4f}" if isinstance(v, float) else f"  {k:<20} {v}")


def cmd_train_teacher(a: argparse.Namespace) -> int:
    from kdlab.runs.teacher import train_teacher

    config, overrides = _split_args(a.args, need_config=False)
    if a.print_config or a.dry_run:
        from kdlab.runs import dry_run

        print(dry_run.teacher(config, overrides, a.dry_run, resume=a.resume, overwrite=a.overwrite))
        return 0
    res = train_teacher(config, overrides, resume=a.resume, overwrite=a.overwrite)
    _print_summary("teacher" + (" (already finished)" if res.reused else ""), res.summary, res.run_dir)
    return 0


def cmd_distill(a: argparse.Namespace) -> int:
    from kdlab.runs.student import distill

    config, overrides = _split_args(a.args, need_config=False)
    if a.print_config or a.dry_run:
        from kdlab.runs import dry_run

        print(dry_run.student(config, overrides, a.dry_run, resume=a.resume, overwrite=a.overwrite))
        return 0
    res = distill(config, overrides, resume=a.resume, overwrite=a.overwrite)
    _print_summary("student" + (" (already finished)" if res.reused else ""), res.summary, res.run_dir)
    return 0


def cmd_study(a: argparse.Namespace) -> int:
    from kdlab.analysis.study_command import check_no_failures, run_study

    config, overrides = _split_args(a.args, need_config=True)
    if a.print_config or a.dry_run:
        from kdlab.study import dry_run

        print(dry_run.study(config, overrides, a.dry_run))
        return 0
    res = run_study(config, overrides, **_launch(a), group_size=1 if a.no_group else None, allow_failures=True)
    _print_tables(res)
    check_no_failures(res)
    return 0


def _launcher_options(p: argparse.ArgumentParser, workers_help: str | None = None) -> None:
    """Where a study's (or an experiment's) runs train: the options of kdlab study and kdlab reproduce."""
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N", help=workers_help or
                   "train up to N runs at once (local worker processes, or Ray tasks in flight)")
    p.add_argument("--launcher", choices=["local", "ray", "slurm"], default="local",
                   help="local processes (default), one Ray task per run, or one Slurm job per run (submitit)")
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="G", help=GPUS_PER_RUN)
    p.add_argument("--cpus-per-run", type=float, default=None, metavar="C",
                   help="CPUs per Ray task or Slurm job (default 1; Slurm: a whole number, per process)")
    ray = p.add_argument_group("Ray (--launcher ray)")
    ray.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="Ray cluster address (default: a local Ray instance, or RAY_ADDRESS)")
    ray.add_argument("--ray-retries", type=_count, default=RAY_RETRIES, metavar="N",
                     help=f"times Ray retries a task whose worker died (default {RAY_RETRIES}; every run resumes "
                          "from its last checkpoint, so a retried run ends as an uninterrupted one)")
    slurm = p.add_argument_group("Slurm (--launcher slurm)", "one job per run or group, submitted from a login "
                                 "node; students wait for their teacher's job; a requeued job resumes its runs; "
                                 "logs in <study>/slurm")
    slurm.add_argument("--partition", metavar="P", help="the jobs' partition (default: the cluster's)")
    slurm.add_argument("--time", default="24:00:00", metavar="HH:MM:SS", help="each job's time limit (default "
                       "24:00:00); a job that reaches it is requeued and resumes where its runs stopped")
    slurm.add_argument("--account", metavar="A", help="the account charged")
    slurm.add_argument("--qos", metavar="Q", help="the quality of service")
    slurm.add_argument("--max-parallel", type=_positive_int, metavar="K",
                       help="at most K jobs in the queue at once (default: all)")
    slurm.add_argument("--mem-gb", type=float, metavar="M", help="memory per job in GB (default: the cluster's)")


def _launch(a: argparse.Namespace) -> dict:
    """The launcher keywords of run_study / reproduce from the options of :func:`_launcher_options`."""
    cpus = a.cpus_per_run
    ray_options = {"address": a.ray_address, "cpus_per_run": 1.0 if cpus is None else cpus,
                   "retries": a.ray_retries}
    slurm_options = None
    if a.launcher == "slurm":
        if cpus is not None and not float(cpus).is_integer():
            raise ConfigError(f"--cpus-per-run: a Slurm job takes a whole number of CPUs, got {cpus}")
        slurm_options = {"partition": a.partition, "time": a.time, "account": a.account, "qos": a.qos,
                         "max_parallel": a.max_parallel, "mem_gb": a.mem_gb,
                         "cpus_per_run": None if cpus is None else int(cpus)}
    return {"workers": a.workers, "launcher": a.launcher, "ray_options": ray_options, "slurm_options": slurm_options,
            "gpus_per_run": a.gpus_per_run}


def _print_tables(res) -> None:
    """A study's tables, after the line naming the methods whose runs did not all finish (as results.md has it)."""
    from kdlab.analysis.convergence import convergence_note
    from kdlab.study.records import incomplete

    missing = incomplete([*res.records, *res.unfinished])
    if missing:
        print(f"Incomplete: {'; '.join(missing)}.\n")
    note = convergence_note(r.run_dir for r in res.records)
    if note:
        print(note + "\n")
    print(res.table)


def cmd_quickstart(a: argparse.Namespace) -> int:
    from kdlab.analysis.study_command import check_no_failures
    from kdlab.api import quickstart

    _, overrides = _split_args(a.args, need_config=False)
    res = quickstart(overrides, workers=a.workers, lab=a.lab, allow_failures=True)
    _print_tables(res)
    check_no_failures(res)
    return 0


def cmd_reproduce(a: argparse.Namespace) -> int:
    from kdlab.reproduce.command import (
        DEFAULT_ROOT,
        check_reproduced,
        dry_run,
        list_experiments,
        reproduce,
        split_teacher_weights,
    )

    if a.list:
        print(list_experiments())
        return 0
    if not a.args:
        raise ConfigError("reproduce: give an experiment id (kdlab reproduce --list prints them)")
    exp_id, overrides = a.args[0], a.args[1:]
    _split_args(["-", *overrides], need_config=False)  # overrides look like key=value
    overrides, teacher_weights = split_teacher_weights(overrides)
    teacher_weights = a.teacher_weights or teacher_weights
    root = a.out or DEFAULT_ROOT
    if a.dry_run:
        print(dry_run(_experiment(exp_id), overrides, root, written=a.as_written, teacher_weights=teacher_weights))
        return 0
    res = reproduce(exp_id, overrides, **_launch(a), root=root, group_size=1 if a.no_group else None,
                    allow_failures=True, written=a.as_written, teacher_weights=teacher_weights)
    for t in res.tables[:1]:
        print(t.to_markdown())
    check_reproduced(res)
    return 0


def _experiment(exp_id: str):
    from kdlab.reproduce.catalogue import get_experiment

    return get_experiment(exp_id)


def cmd_eval(a: argparse.Namespace) -> int:
    from kdlab.runs.evaluate import evaluate

    target, overrides = _split_args(a.args, need_config=True)
    source = target if target.endswith((".yaml", ".yml")) else {"path": target}
    if a.print_config or a.dry_run:
        from kdlab.runs import dry_run

        print(dry_run.evaluation(source, overrides, a.dry_run))
        return 0
    out = evaluate(source, overrides)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<20} {v:.4f}" if isinstance(v, float) else f"{k:<20} {v}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from kdlab.runs.export import export_model

    target, overrides = _split_args(a.args, need_config=True)
    out = export_model(target, a.format, a.out, overrides=overrides)
    print(f"exported: {out}")
    return 0


def cmd_tune(a: argparse.Namespace) -> int:
    from kdlab.analysis.tune import tune
    from kdlab.config.loader import read_yaml
    from kdlab.config.tune import parse_search

    config, overrides = _split_args(a.args, need_config=True)
    raw = read_yaml(config)
    # a tune file names its base config and search; any other YAML is the base run config itself
    data = dict(raw) if "search" in raw or "base" in raw else {"base": config}
    if overrides:
        data["overrides"] = [*(data.get("overrides") or []), *overrides]
    if a.search:
        data["search"] = {**(data.get("search") or {}), **dict(parse_search(s) for s in a.search)}
    for key, value in (("trials", a.trials), ("metric", a.metric), ("direction", a.direction),
                       ("out_dir", a.out), ("seed", a.seed), ("storage", a.storage), ("pruner", a.pruner),
                       ("name", a.name)):
        if value is not None:
            data[key] = value
    if a.allow_test_metric:
        data["allow_test_metric"] = True
    res = tune(data)
    if res.best is None:
        raise KdlabError(f"no trial of the search finished ({', '.join(f'{n} {s}' for s, n in res.counts().items())}"
                         f"); see {res.out_dir / 'trials.csv'}")
    from kdlab.config import dump_yaml

    b = res.best
    counts = ", ".join(f"{n} {s}" for s, n in res.counts().items())
    print(f"best: trial {b['trial']}, {res.metric} {b['value']:.4f} ({counts}); run folder {b['run_dir']}")
    print(f"best config ({res.out_dir / 'best.yaml'}):")
    print(dump_yaml(res.best_config), end="")
    print(f"trials: {res.out_dir / 'trials.csv'}  plot: {res.out_dir / 'search.png'}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from kdlab.analysis.report import write_report

    md, html = write_report(a.study_dir)
    print(f"report: {html}\nmarkdown: {md}")
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    from kdlab.analysis.figure_names import FIGURE_SPECS, SPECS
    from kdlab.analysis.figures import plot_study

    options = {k: v for k, v in (("teacher", a.teacher), ("split", a.split)) if v is not None}
    for k in options:
        if k not in FIGURE_SPECS[a.figure].options:
            takers = " and ".join(f.name for f in SPECS if k in f.options)
            raise ConfigError(f"--{k} applies to the {takers} figure only")
    print(plot_study(a.study_dir, a.figure, a.out, **options))
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from kdlab.cli.listing import listing

    print(listing(a.what, a.name))
    return 0


def cmd_schema(a: argparse.Namespace) -> int:
    from kdlab.config.describe import schema_text

    print(schema_text(a.kind, a.key))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kdlab.core.version import __version__

    p = argparse.ArgumentParser(prog="kdlab", description="Student-oriented teacher training and knowledge "
                                "distillation: train teachers, distil students, compare them.", epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"kdlab {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn, help_: str, args_help: str, resume: bool = False,
            preview: bool = False, examples: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        epilog = ("examples:\n" + "".join(f"  {x}\n" for x in examples) + "\n" + EPILOG) if examples else EPILOG
        sp = sub.add_parser(name, help=help_, description=help_, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter if examples else
                            argparse.HelpFormatter)
        sp.add_argument("args", nargs="*", metavar="ARG", help=args_help)
        if preview:
            sp.add_argument("--print-config", action="store_true", help="print the resolved config (every default "
                            "filled in) as YAML and exit, writing nothing")
            sp.add_argument("--dry-run", action="store_true", help="as --print-config, plus what the command would "
                            "do (train, resume or reuse each run; its errors) as YAML comments; writes nothing")
        if resume:
            sp.add_argument("--resume", action="store_true",
                            help="continue an interrupted run in out_dir (or reuse a finished one)")
            sp.add_argument("--overwrite", action="store_true",
                            help="delete the run already in out_dir and train it anew")
        sp.set_defaults(fn=fn)
        return sp

    add("train-teacher", cmd_train_teacher, "train a teacher network",
        "[CONFIG.yaml] [key=value ...]", resume=True, preview=True)
    add("distill", cmd_distill, "train a student, distilled from a teacher (method none: alone)",
        "[CONFIG.yaml] [key=value ...]", resume=True, preview=True)
    st = add("study", cmd_study, "run teacher methods x pairs x distillation methods x seeds and print the "
             "tables (finished runs are reused, interrupted ones resumed)", "CONFIG.yaml [key=value ...]",
             preview=True)
    _launcher_options(st)
    st.add_argument("--no-group", action="store_true", help="train every student on its own (default: the "
                    "students of one teacher train together, up to group_size, sharing its forward pass)")
    rp_ = add("reproduce", cmd_reproduce, "run a table or figure of the SoTeacher or SFTN paper and print it in "
              "the paper's layout (paper / kdlab / difference in every cell)", "ID [key=value ...]")
    rp_.add_argument("--list", action="store_true", help="list the experiments: id, what it measures, runs, "
                     "estimated GPU time")
    rp_.add_argument("--dry-run", action="store_true", help="print what the experiment states about itself (where "
                     "it follows the released code, kdlab's choices where the paper is silent, rows not trained), "
                     "then the planned runs and their resolved configs")
    rp_.add_argument("--as-written", action="store_true", help="the paper's text where the authors' released code "
                     "differs (the default follows the code, which made the tables): the runs it changes train "
                     "under <label>-as-written, the others are shared; the table goes to <out>/<id>-as-written")
    rp_.add_argument("--out", metavar="DIR", help="root of the experiment's folders (default: runs/reproduce)")
    rp_.add_argument("--teacher-weights", metavar="DIR", help="a folder of published standard teachers (the CRD "
                     "benchmark's save/models: <arch>_vanilla/ckpt_epoch_240.pth, or <arch>.pth): the students "
                     "distil from them instead of trained ones (also: teacher_weights=DIR)")
    _launcher_options(rp_, "runs at once (as kdlab study)")
    rp_.add_argument("--no-group", action="store_true", help="as kdlab study")
    e = add("eval", cmd_eval, "evaluate a checkpoint on the test split",
            "RUN_DIR | CHECKPOINT.pt | EVAL.yaml [key=value ...] (e.g. checkpoint=best teacher.path=runs/t)",
            preview=True, examples=(
                "kdlab eval runs/student-resnet8-kd-s0                     # its last checkpoint on the test split",
                "kdlab eval runs/student-resnet8-kd-s0 checkpoint=best --json",
                "kdlab eval runs/s/checkpoints/epoch_010.pt teacher.path=runs/teacher-resnet8x4-s0   # + agreement",
                "kdlab eval runs/t --dry-run                              # what it would read, nothing run"))
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ex = add("export", cmd_export, "write a run's model as a file that loads without kdlab (the user's own "
             "module's state dict for module-adapter runs, torchvision's keys for torchvision models)",
             "RUN_DIR | CHECKPOINT.pt [checkpoint=last|best|epoch_XXX]", examples=(
                 "kdlab export runs/student-resnet8-kd-s0                   # -> RUN_DIR/export/last.pt (state dict)",
                 "kdlab export runs/student-resnet8-kd-s0 checkpoint=best --format safetensors",
                 "kdlab export runs/t --format onnx --out t.onnx           # traced, dynamic batch size",
                 "kdlab export runs/t --format torchscript                 # torch.jit.trace, no Python class"))
    ex.add_argument("--format", choices=["state_dict", "torchscript", "onnx", "safetensors"], default="state_dict",
                    help="state_dict (torch.save; default), torchscript (traced), onnx (needs onnx and onnxscript) "
                    "or safetensors")
    ex.add_argument("--out", metavar="FILE", help="file to write (default: RUN_DIR/export/<checkpoint>.<format>)")
    tn = add("tune", cmd_tune, "search hyper-parameters of a train-teacher or distill run (Optuna) and print the "
             "best config",
             "CONFIG.yaml [key=value ...] (a train-teacher or distill config, whose keys the overrides set, or a "
             "tune file: base, search, trials, ...; see kdlab.config.tune)")
    tn.description = ("search hyper-parameters of a train-teacher or distill run with Optuna (pip install "
                      "'kdlab[tune]'): each trial is a run in OUT/trials/, scored by a validation metric; prints the "
                      "best config and writes it to OUT/best.yaml, with trials.csv and search.png.  The same command "
                      "again continues the search (a killed trial from its last checkpoint), and several processes "
                      "given the same OUT share it.")
    tn.add_argument("--search", action="append", default=[], metavar="KEY=DIST",
                    help="a key to search: KEY=float:LOW:HIGH[:log], KEY=int:LOW:HIGH[:log] or KEY=choice:A,B,... "
                    "(repeat for each key), e.g. --search method.T=float:1:8 --search optim.lr=float:0.01:0.2:log")
    tn.add_argument("--trials", type=_positive_int, metavar="N", help="trials of the search (default 20)")
    tn.add_argument("--metric", metavar="KEY", help="what a trial scores: an epoch record's or the summary's key "
                    "(default val_top1, which needs data.val_fraction)")
    tn.add_argument("--direction", choices=["maximize", "minimize"], help="default: minimize for losses (nll, "
                    "loss, ece), else maximize")
    tn.add_argument("--allow-test-metric", action="store_true", help="allow a metric of the test split "
                    "(test_top1, top1, ...): selecting on the test set overfits it")
    tn.add_argument("--out", metavar="DIR", help="the search's folder (default runs/tune)")
    tn.add_argument("--seed", type=int, metavar="N", help="seed of the TPE sampler (default 0)")
    tn.add_argument("--storage", metavar="URL", help="Optuna storage: a journal file (default OUT/study.journal) "
                    "or sqlite:///FILE.db")
    tn.add_argument("--pruner", choices=["median", "none"], help="median (default): stop a trial worse than the "
                    "median of the earlier trials at the same epoch; none")
    tn.add_argument("--name", metavar="NAME", help="the study's name in the storage (default tune)")
    ls = sub.add_parser("list", help="list models, teacher methods, distillation methods or data sets, with "
                        "their parameters", description="list the registered components; the methods with each "
                        "parameter's type, default and meaning (NAME: one component's parameters)")
    ls.add_argument("what", nargs="?", default="all", metavar="KIND", help="all (default), models, teacher-methods, "
                    "distill-methods, methods (both) or datasets; or a component's name (its parameters)")
    ls.add_argument("name", nargs="?", metavar="NAME", help="one component of KIND, with its parameters")
    ls.set_defaults(fn=cmd_list)
    sc = sub.add_parser("schema", help="the keys of a run config: type, default and meaning",
                        description="print every key of a train-teacher (teacher), distill, study or eval config "
                        "with its type, default and meaning; KEY: only that key and those below it (e.g. train)")
    sc.add_argument("kind", choices=SCHEMA_KINDS, metavar="KIND", help=" | ".join(SCHEMA_KINDS))
    sc.add_argument("key", nargs="?", metavar="KEY", help="a dotted key, e.g. optim or train.epochs")
    sc.set_defaults(fn=cmd_schema)
    rp = sub.add_parser("report", help="write a study's report.html (self-contained: tables and figures) and "
                        "report.md", description="write STUDY_DIR/report.html (tables and figures in one file) and "
                        "report.md (tables, links to figures/*.png) from the study's run folders")
    rp.add_argument("study_dir", metavar="STUDY_DIR", help="a study's out_dir (holds study.yaml)")
    rp.set_defaults(fn=cmd_report)
    from kdlab.analysis.figure_names import SPECS  # names and help only: no plotting imports

    pl = sub.add_parser("plot", help="draw one figure of a study as PNG", formatter_class=argparse.
                        RawDescriptionHelpFormatter, description="draw one figure of a study from its run folders "
                        "(no training):\n\n" + "\n".join(f"  {f.name:<18} {f.help}" for f in SPECS))
    names = [f.name for f in SPECS]
    pl.add_argument("figure", choices=names, metavar="FIGURE", help=" | ".join(names))
    pl.add_argument("study_dir", metavar="STUDY_DIR", help="a study's out_dir (holds study.yaml)")
    pl.add_argument("--out", metavar="FILE", help="PNG file to write (default: STUDY_DIR/figures/FIGURE.png)")
    pl.add_argument("--teacher", metavar="LABEL", help="deviation: only this teacher method (default: every one)")
    pl.add_argument("--split", choices=["test", "train"], help="deviation: the test examples (default) or the "
                    "training points the runs fitted (predicted once by each run's final checkpoint, then kept in "
                    "its folder)")
    pl.set_defaults(fn=cmd_plot)
    qs = add("quickstart", cmd_quickstart, "train a resnet8 teacher two ways (standard, SoTeacher), a KD student "
             "from each and the student alone over 5 seeds on the Fashion-MNIST images that ship with kdlab (about "
             "2 minutes on 2 CPU cores) and print the comparison tables with paired differences", "[key=value ...]")
    qs.add_argument("--lab", action="store_true", help="the mixed-feature lab instead: kdlab's generated data "
                    "with a known p* (SoTeacher Def. 3.1), three teacher methods (standard, SoTeacher, SFTN), "
                    "under 3 minutes on 2 CPU cores")
    qs.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                    help="runs at once (default: one per CPU core, at most 8; the cores are shared among them, "
                         "so one thread each up to 8 cores)")
    for sp in sub.choices.values():  # the error hint says "rerun with --debug": after the subcommand works too
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks for errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    tie_to_launcher()  # a torchrun worker ends with its launcher, even one killed with SIGKILL
    parser = build_parser()
    a, extra = parser.parse_known_args(argv)
    if extra:  # overrides after an option (`kdlab study c.yaml --workers 2 seeds=[0]`) belong to the arguments
        if not hasattr(a, "args") or any(x.startswith("-") for x in extra):
            parser.parse_args(argv)  # the usual one-line error for an unknown option
        a.args = [*a.args, *extra]
    if not getattr(a, "fn", None):
        parser.print_help()
        return 2
    code = 1  # an exception: in a torchrun job, leave at once (the others are told to stop by torchrun)
    restore_sigterm = _unwind_on_sigterm()
    try:
        code = a.fn(a)
        return code
    except KdlabError as e:
        if a.debug:
            traceback.print_exc()
        print(f"kdlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into a reader that stopped (e.g. `kdlab list | head`)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated); a study has said so already
        if not was_reported(e):
            print(interrupted_line(e, "finished epochs are checkpointed: rerun with --resume (study and quickstart "
                                   "resume by themselves)"), file=sys.stderr)
        return Terminated.exit_code if isinstance(e, Terminated) else 130
    except Exception as e:  # noqa: BLE001 - a bug: one line unless --debug
        if a.debug or os.environ.get("KDLAB_DEBUG"):
            traceback.print_exc()
        if isinstance(e, OSError) and e.filename is not None:
            # a folder that cannot be made or written (read-only, no permission, disk full): name it
            print(f"kdlab: error: cannot use {e.filename}: {e.strerror or e}", file=sys.stderr)
            return 1
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        job = _job_position()
        if job is not None and type(e).__name__ in ("DistBackendError", "DistNetworkError", "RuntimeError") \
                and any(w in msg.lower() for w in ("connection", "peer", "closed", "gloo", "nccl", "timed out")):
            # a collective broke because another process of the job ended: that process's error is the cause
            print(f"kdlab: {job}: stopped: a collective failed ({type(e).__name__}: {msg[:120]}); another "
                  "process of the job probably failed first: see its error", file=sys.stderr)
            return 1
        print(f"kdlab: internal error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        restore_sigterm()
        _leave_process_group(clean=code == 0)


def _unwind_on_sigterm():
    """Make SIGTERM raise :class:`Terminated` in the main thread, so that it unwinds as Ctrl-C does (``finally``
    blocks and locks run, a study stops its workers) and the command ends with its one line; a second SIGTERM
    while unwinding is ignored.  Only where SIGTERM has its default action (an embedding application's or a
    torchrun job's own handler stays).  Returns the function that puts the default back."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None
    raised = []

    def terminated(signum, frame) -> None:  # noqa: ARG001
        if not raised:
            raised.append(signum)
            raise Terminated

    signal.signal(signal.SIGTERM, terminated)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is terminated:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return restore


def _job_position() -> str | None:
    """'process r of w' inside a torchrun job, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return f"process {os.environ.get('RANK', '?')} of {world}" if world > 1 else None


def _distributed_module():
    """kdlab's distributed module if this process imported it (else no process group was joined: importing it
    now would only cost the torch import)."""
    return sys.modules.get("kdlab.core.distributed")


def _leave_process_group(clean: bool = True) -> None:
    """After a failure no barrier: the other processes may be waiting in a collective this one never joins, and
    a barrier would hang the whole job; exiting lets torchrun stop them."""
    distributed = _distributed_module()
    if distributed is None or not clean:
        return
    with contextlib.suppress(Exception):  # a peer that already failed: nothing left to synchronise with
        distributed.shutdown()


def entry() -> None:
    """The ``kdlab`` command and ``python -m kdlab``."""
    _import_from_cwd()
    code = main()
    distributed = _distributed_module()
    if distributed is not None and distributed.env().active:
        # In a torchrun job gloo's worker threads can hit std::terminate while the interpreter tears down (a
        # SIGABRT after a finished run); every file is written and closed by now, so skip the teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code or 0))
    sys.exit(code)


def _import_from_cwd() -> None:
    """Make modules in the working directory importable (``model: {name: module, target: "mynets:Net"}``), as
    ``python -m kdlab`` does; the console script's first path entry is its own bin folder instead."""
    if getattr(sys.flags, "safe_path", False):  # python -P: no implicit path entries wanted
        return
    cwd = os.getcwd()
    if all(os.path.abspath(p or os.curdir) != cwd for p in sys.path):
        sys.path.insert(0, cwd)


if __name__ == "__main__":  # pragma: no cover
    entry()
