"""The student trained alone: the baseline of every distillation table."""

from kdlab.core.registry import register_distill_method
from kdlab.methods.base import CrossEntropy


@register_distill_method("none", needs_teacher=False, paper="-")
class NoDistillation(CrossEntropy):
    """No distillation: the student trained alone with cross-entropy (no teacher needed)."""
