"""The Python API: the functions behind the CLI's subcommands."""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

from kdlab.analysis.study_command import StudyResult, run_study
from kdlab.analysis.tune import TuneResult, tune
from kdlab.runs.evaluate import evaluate
from kdlab.runs.export import export_model, load_model
from kdlab.runs.student import distill
from kdlab.runs.summary import RunResult
from kdlab.runs.teacher import train_teacher

__all__ = ["RunResult", "StudyResult", "TuneResult", "distill", "evaluate", "export_model", "load_model", "quickstart",
           "quickstart_config", "quickstart_workers", "run_study", "train_teacher", "tune"]


def quickstart_config(lab: bool = False) -> str:
    """Path of the embedded quickstart study config: real images (Fashion-MNIST's shipped subset), or with ``lab``
    the mixed-feature lab (generated data with a known p*)."""
    return str(resources.files("kdlab") / "configs" / ("quickstart_lab.yaml" if lab else "quickstart.yaml"))


def quickstart_workers() -> int:
    """The quickstart's runs at once: one per CPU core, at most 8 (study workers share the cores, so each run
    has one thread up to 8 cores).  Its models are small enough that one thread each is faster than several
    threads on one run (1.4-1.5x on 2 cores), and a run's numbers then depend on the CPU, not on its number of
    cores."""
    return max(1, min(os.cpu_count() or 1, 8))


def quickstart(overrides: list[str] = (), workers: int | None = None, lab: bool = False,
               **kwargs: Any) -> StudyResult:
    """A teacher trained two ways (three with ``lab``), a KD student from each and the student alone, over 5 seeds,
    on data that ships with the install; ``workers`` defaults to :func:`quickstart_workers`."""
    return run_study(quickstart_config(lab), overrides, workers=workers or quickstart_workers(), **kwargs)
