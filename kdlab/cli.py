"""The ``kdlab`` command: subcommands mapped to the plain functions of :mod:`kdlab.api`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, KdlabError

EPILOG = ("Overrides are dotted keys: optim.lr=0.01 seed=3 train.epochs=5 method.T=2 'seeds=[0,1]'. "
          "Values use YAML syntax.")


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
    keys = ["top1", "top5", "nll", "ece", "best_top1", "teacher_top1", "agreement", "kl_teacher_student",
            "pstar_l1_train", "pstar_l1_test", "train_time"]
    print(f"{title}: {run_dir}")
    for k in keys:
        if k in summary:
            v = summary[k]
            print(f"  {k:<20} {v:.4f}" if isinstance(v, float) else f"  {k:<20} {v}")


def cmd_train_teacher(a: argparse.Namespace) -> int:
    from .runs import train_teacher

    config, overrides = _split_args(a.args, need_config=False)
    res = train_teacher(config, overrides, resume=a.resume)
    _print_summary("teacher" + (" (already finished)" if res.reused else ""), res.summary, res.run_dir)
    return 0


def cmd_distill(a: argparse.Namespace) -> int:
    from .runs import distill

    config, overrides = _split_args(a.args, need_config=False)
    res = distill(config, overrides, resume=a.resume)
    _print_summary("student" + (" (already finished)" if res.reused else ""), res.summary, res.run_dir)
    return 0


def cmd_study(a: argparse.Namespace) -> int:
    from .study import run_study
    from .study.runner import check_no_failures

    config, overrides = _split_args(a.args, need_config=True)
    ray_options = {"address": a.ray_address, "gpus_per_run": a.gpus_per_run, "cpus_per_run": a.cpus_per_run}
    res = run_study(config, overrides, workers=a.workers, launcher=a.launcher, ray_options=ray_options,
                    group_size=1 if a.no_group else None)
    print(res.table)
    check_no_failures(res)
    return 0


def cmd_quickstart(a: argparse.Namespace) -> int:
    from .api import quickstart
    from .study.runner import check_no_failures

    _, overrides = _split_args(a.args, need_config=False)
    res = quickstart(overrides, workers=a.workers)
    print(res.table)
    check_no_failures(res)
    return 0


def cmd_reproduce(a: argparse.Namespace) -> int:
    from .reproduce.command import DEFAULT_ROOT, check_reproduced, dry_run, list_experiments, reproduce

    if a.list:
        print(list_experiments())
        return 0
    if not a.args:
        raise ConfigError("reproduce: give an experiment id (kdlab reproduce --list prints them)")
    exp_id, overrides = a.args[0], a.args[1:]
    _split_args(["-", *overrides], need_config=False)  # overrides look like key=value
    root = a.out or DEFAULT_ROOT
    if a.dry_run:
        print(dry_run(_experiment(exp_id), overrides, root))
        return 0
    ray_options = {"address": a.ray_address, "gpus_per_run": a.gpus_per_run, "cpus_per_run": a.cpus_per_run}
    res = reproduce(exp_id, overrides, workers=a.workers, launcher=a.launcher, ray_options=ray_options, root=root,
                    group_size=1 if a.no_group else None)
    for t in res.tables[:1]:
        print(t.to_markdown())
    check_reproduced(res)
    return 0


def _experiment(exp_id: str):
    from .reproduce.catalogue import get_experiment

    return get_experiment(exp_id)


def cmd_eval(a: argparse.Namespace) -> int:
    from .runs import evaluate

    target, overrides = _split_args(a.args, need_config=True)
    source = target if target.endswith((".yaml", ".yml")) else {"path": target}
    out = evaluate(source, overrides)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<20} {v:.4f}" if isinstance(v, float) else f"{k:<20} {v}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from .report import write_report

    md, html = write_report(a.study_dir)
    print(f"report: {html}\nmarkdown: {md}")
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    from .study.figures import plot_study

    options = {k: v for k, v in (("teacher", a.teacher), ("split", a.split)) if v is not None}
    if options and a.figure != "deviation":
        raise ConfigError(f"--{next(iter(options))} applies to the deviation figure only")
    print(plot_study(a.study_dir, a.figure, a.out, **options))
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from .listing import listing

    print(listing(a.what))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="kdlab", description="Student-oriented teacher training and knowledge "
                                "distillation: train teachers, distil students, compare them.", epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"kdlab {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn, help_: str, args_help: str, resume: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG)
        sp.add_argument("args", nargs="*", metavar="ARG", help=args_help)
        if resume:
            sp.add_argument("--resume", action="store_true",
                            help="continue an interrupted run in out_dir (or reuse a finished one)")
        sp.set_defaults(fn=fn)
        return sp

    add("train-teacher", cmd_train_teacher, "train a teacher network",
        "[CONFIG.yaml] [key=value ...]", resume=True)
    add("distill", cmd_distill, "train a student, distilled from a teacher (method none: alone)",
        "[CONFIG.yaml] [key=value ...]", resume=True)
    st = add("study", cmd_study, "run teacher methods x pairs x distillation methods x seeds and print the "
             "tables (finished runs are reused, interrupted ones resumed)", "CONFIG.yaml [key=value ...]")
    st.add_argument("--workers", type=int, default=1, metavar="N",
                    help="train up to N runs at once (local worker processes, or Ray tasks in flight)")
    st.add_argument("--launcher", choices=["local", "ray"], default="local",
                    help="local processes (default) or one Ray task per run")
    st.add_argument("--ray-address", default=None, metavar="ADDR",
                    help="Ray cluster address (default: a local Ray instance, or RAY_ADDRESS)")
    st.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs per Ray task (default 0)")
    st.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs per Ray task (default 1)")
    st.add_argument("--no-group", action="store_true", help="train every student on its own (default: the "
                    "students of one teacher train together, up to group_size, sharing its forward pass)")
    rp_ = add("reproduce", cmd_reproduce, "run a table or figure of the SoTeacher or SFTN paper and print it in "
              "the paper's layout (paper / kdlab / difference in every cell)", "ID [key=value ...]")
    rp_.add_argument("--list", action="store_true", help="list the experiments: id, what it measures, runs, "
                     "estimated GPU time")
    rp_.add_argument("--dry-run", action="store_true", help="print the planned runs and their resolved configs")
    rp_.add_argument("--out", metavar="DIR", help="root of the experiment's folders (default: runs/reproduce)")
    rp_.add_argument("--workers", type=int, default=1, metavar="N", help="runs at once (as kdlab study)")
    rp_.add_argument("--launcher", choices=["local", "ray"], default="local", help="as kdlab study")
    rp_.add_argument("--ray-address", default=None, metavar="ADDR", help="as kdlab study")
    rp_.add_argument("--gpus-per-run", type=float, default=0.0, help="as kdlab study")
    rp_.add_argument("--cpus-per-run", type=float, default=1.0, help="as kdlab study")
    rp_.add_argument("--no-group", action="store_true", help="as kdlab study")
    e = add("eval", cmd_eval, "evaluate a checkpoint on the test split",
            "RUN_DIR | CHECKPOINT.pt | EVAL.yaml [key=value ...] (e.g. checkpoint=best teacher.path=runs/t)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ls = sub.add_parser("list", help="list models, teacher methods, distillation methods or data sets",
                        description="list registered components")
    ls.add_argument("what", nargs="?", default="all",
                    choices=["all", "models", "teacher-methods", "distill-methods", "methods", "datasets"])
    ls.set_defaults(fn=cmd_list)
    rp = sub.add_parser("report", help="write a study's report.html (self-contained: tables and figures) and "
                        "report.md", description="write STUDY_DIR/report.html (tables and figures in one file) and "
                        "report.md (tables, links to figures/*.png) from the study's run folders")
    rp.add_argument("study_dir", metavar="STUDY_DIR", help="a study's out_dir (holds study.yaml)")
    rp.set_defaults(fn=cmd_report)
    from .study.figure_names import FIGURE_HELP  # no matplotlib import just to build the parser

    pl = sub.add_parser("plot", help="draw one figure of a study as PNG", formatter_class=argparse.
                        RawDescriptionHelpFormatter, description="draw one figure of a study from its run folders "
                        "(no training):\n\n" + "\n".join(f"  {k:<18} {v}" for k, v in FIGURE_HELP.items()))
    pl.add_argument("figure", choices=list(FIGURE_HELP), metavar="FIGURE", help=" | ".join(FIGURE_HELP))
    pl.add_argument("study_dir", metavar="STUDY_DIR", help="a study's out_dir (holds study.yaml)")
    pl.add_argument("--out", metavar="FILE", help="PNG file to write (default: STUDY_DIR/figures/FIGURE.png)")
    pl.add_argument("--teacher", metavar="LABEL", help="deviation: the teacher method label (default: the first)")
    pl.add_argument("--split", choices=["test", "train"], help="deviation: the test examples (default) or the "
                    "training points the runs fitted (predicted once by each run's final checkpoint, then kept in "
                    "its folder)")
    pl.set_defaults(fn=cmd_plot)
    qs = add("quickstart", cmd_quickstart, "train teachers, KD students and the student alone over 3 seeds on "
             "embedded data (a few minutes on a CPU) and print the comparison table", "[key=value ...]")
    qs.add_argument("--workers", type=int, default=1, metavar="N", help="runs at once (worker processes)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a, extra = parser.parse_known_args(argv)
    if extra:  # overrides after an option (`kdlab study c.yaml --workers 2 seeds=[0]`) belong to the arguments
        if not hasattr(a, "args") or any(x.startswith("-") for x in extra):
            parser.parse_args(argv)  # the usual one-line error for an unknown option
        a.args = [*a.args, *extra]
    if not getattr(a, "fn", None):
        parser.print_help()
        return 2
    try:
        return a.fn(a)
    except KdlabError as e:
        if a.debug:
            traceback.print_exc()
        print(f"kdlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into a reader that stopped (e.g. `kdlab list | head`)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("kdlab: interrupted; finished epochs are checkpointed: rerun with --resume (study and quickstart "
              "resume by themselves)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line unless --debug
        if a.debug or os.environ.get("KDLAB_DEBUG"):
            traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"kdlab: internal error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    from .engine import distributed

    with contextlib.suppress(Exception):  # a peer that already failed: nothing left to synchronise with
        distributed.shutdown()


def entry() -> None:
    """The ``kdlab`` command and ``python -m kdlab``."""
    from .engine.distributed import env

    code = main()
    if env().active:
        # In a torchrun job gloo's worker threads can hit std::terminate while the interpreter tears down (a
        # SIGABRT after a finished run); every file is written and closed by now, so skip the teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code or 0))
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
