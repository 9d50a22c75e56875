"""kdlab: student-oriented teacher training and knowledge distillation in PyTorch.

Python API (each takes a config object, a mapping or a YAML path, plus optional dotted overrides)::

    import kdlab
    teacher = kdlab.train_teacher("configs/digits/teacher.yaml")
    student = kdlab.distill({"data": "digits", "student": "resnet8", "teacher": {"path": teacher.run_dir}})
    table = kdlab.run_study("configs/quickstart.yaml", overrides=["seeds=[0]"])
    model = kdlab.load_model(student.run_dir)
"""

from __future__ import annotations

import importlib
from typing import Any

from kdlab.core.version import __version__

# Importing torch and every component takes seconds; ``import kdlab`` (and so ``kdlab --help`` and ``kdlab list``)
# should not, so the API functions are imported on first use (PEP 562).
_LAZY = {
    "distill": "kdlab.api",
    "evaluate": "kdlab.api",
    "run_study": "kdlab.api",
    "train_teacher": "kdlab.api",
    "tune": "kdlab.api",
    "load_model": "kdlab.runs.export",
}

__all__ = ["__version__", "distill", "evaluate", "load_model", "run_study", "train_teacher", "tune"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_"):
        # ``import kdlab; kdlab.regularizers.X`` worked while kdlab imported everything; keep it working
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
