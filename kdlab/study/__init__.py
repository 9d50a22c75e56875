"""Studies: teacher methods x distillation methods x seeds, with result tables."""

from .runner import StudyResult, plan_study, run_study

__all__ = ["StudyResult", "plan_study", "run_study"]
