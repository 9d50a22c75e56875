"""Studies: teacher methods x teacher/student pairs x distillation methods x seeds, with tables and figures."""

from .plan import PlannedRun, plan_study
from .runner import StudyResult, run_study

__all__ = ["PlannedRun", "StudyResult", "plan_study", "run_study"]
