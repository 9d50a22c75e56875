"""Teacher-training and distillation methods, behind one step interface (:mod:`kdlab.methods.base`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from kdlab.core import log
from kdlab.core.registry import DISTILL_METHODS, TEACHER_METHODS
from kdlab.methods.base import CrossEntropy, DistillObjective, Objective, StepOutput
from kdlab.methods.context import DistillContext, TeacherContext

__all__ = ["CrossEntropy", "DistillContext", "DistillObjective", "Objective", "StepOutput", "TeacherContext",
           "build_distill_objective",
           "build_teacher_objective", "needs_teacher", "shares_batch_pass"]


def build_teacher_objective(spec, model: nn.Module, data: Any, run_dir=None, epochs: int = 1,
                            checkpoint_file: Callable[[str], Path] | None = None) -> Objective:
    """``checkpoint_file``: resolves a teacher run folder or checkpoint file to its checkpoint file (SFTN's
    ``pretrained``); the runs layer provides it."""
    ctx = TeacherContext(model=model, data=data, run_dir=run_dir, epochs=epochs, checkpoint_file=checkpoint_file)
    return TEACHER_METHODS.get(spec.name).build(spec.params, ctx)


def build_distill_objective(spec, teacher: nn.Module | None, student: nn.Module, data: Any, run_dir=None,
                            epochs: int = 1, teacher_path=None, device=None,
                            teacher_checkpoints: Callable[[], dict[int, Path]] | None = None) -> Objective:
    """``teacher_path``: the teacher's checkpoint file; ``teacher_checkpoints``: epoch -> checkpoint file of the
    teacher run's epoch checkpoints (RCO's anchors; the runs layer provides it); ``device``: where the teacher
    lives."""
    entry = DISTILL_METHODS.get(spec.name)
    params_model = getattr(entry.obj, "Params", None)
    if hasattr(params_model, "ineffective"):
        for why in params_model(**spec.params).ineffective(epochs):
            log.warning(f"kdlab: warning: method.{why}")
    ctx = DistillContext(teacher=teacher, student=student, data=data, run_dir=run_dir, epochs=epochs,
                         teacher_path=teacher_path, device=device, teacher_checkpoints=teacher_checkpoints)
    return entry.build(spec.params, ctx)


def needs_teacher(method_name: str) -> bool:
    return bool(DISTILL_METHODS.get(method_name).meta.get("needs_teacher", True))


def shares_batch_pass(method_name: str) -> bool:
    """Whether a method in a group of students takes the teacher's outputs on each batch from the group's one
    pass (its registry entry says ``shares_batch_pass=False`` when every teacher pass it makes is its own, e.g.
    SSKD's, which runs the teacher on the batch and its rotations at once)."""
    meta = DISTILL_METHODS.get(method_name).meta
    return needs_teacher(method_name) and bool(meta.get("shares_batch_pass", True))
