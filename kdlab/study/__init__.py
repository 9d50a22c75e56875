"""Studies: plan the runs of teacher methods x pairs x distillation methods x seeds, execute them, read them back.

The tables, figures and report of a study are the analysis layer's (:mod:`kdlab.analysis`)."""

import importlib

# imported on first use: the CLI reads this package without the planner's torch imports
_LAZY = {"PlannedRun": ".plan", "plan_study": ".plan"}

__all__ = ["PlannedRun", "plan_study"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
