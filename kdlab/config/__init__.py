"""Configuration: typed schemas, YAML loading and dotted overrides."""

from kdlab.config.components import Component
from kdlab.config.loader import apply_overrides, dump_yaml, load_config, parse_overrides
from kdlab.config.schema import (
    DistillRunConfig,
    EvalConfig,
    OptimConfig,
    ScheduleConfig,
    StudyConfig,
    TeacherRef,
    TeacherRunConfig,
    TrainConfig,
)


def schema_for(raw: dict):
    """The schema a config mapping is written for: study, distill, eval or teacher run."""
    student = raw.get("student")
    if "seeds" in raw or "pairs" in raw or (isinstance(student, dict) and ("model" in student or "methods" in student)):
        return StudyConfig
    if "student" in raw:
        return DistillRunConfig
    if "path" in raw:
        return EvalConfig
    return TeacherRunConfig


__all__ = ["schema_for",
    "Component", "DistillRunConfig", "EvalConfig", "OptimConfig", "ScheduleConfig", "StudyConfig", "TeacherRef",
    "TeacherRunConfig", "TrainConfig", "apply_overrides", "dump_yaml", "load_config", "parse_overrides",
]
