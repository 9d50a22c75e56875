"""The student trained alone: the baseline of every distillation table."""

from ...registry import register_distill_method
from ..base import CrossEntropy


@register_distill_method("none", needs_teacher=False, paper="-")
class NoDistillation(CrossEntropy):
    """No distillation: the student trained alone with cross-entropy (no teacher needed)."""
