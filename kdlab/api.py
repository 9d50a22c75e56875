"""The Python API: the functions behind the CLI's subcommands."""

from __future__ import annotations

from importlib import resources
from typing import Any

from .export import export_model, load_model
from .runs import RunResult, distill, evaluate, train_teacher
from .study import StudyResult, run_study

__all__ = ["RunResult", "StudyResult", "distill", "evaluate", "export_model", "load_model", "quickstart",
           "quickstart_config", "run_study", "train_teacher"]


def quickstart_config() -> str:
    """Path of the embedded quickstart study config."""
    return str(resources.files("kdlab") / "configs" / "quickstart.yaml")


def quickstart(overrides: list[str] = (), **kwargs: Any) -> StudyResult:
    """Teacher, KD student and student alone over 3 seeds on data that ships with the install."""
    return run_study(quickstart_config(), overrides, **kwargs)
