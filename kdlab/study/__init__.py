"""Studies: teacher methods x teacher/student pairs x distillation methods x seeds, with tables and figures."""

import importlib

# imported on first use: the CLI reads figure_names and table without the planner's and runner's torch imports
_LAZY = {"PlannedRun": ".plan", "plan_study": ".plan", "StudyResult": ".runner", "run_study": ".runner"}

__all__ = ["PlannedRun", "StudyResult", "plan_study", "run_study"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
