"""Standard teacher training: empirical risk minimisation with cross-entropy."""

from kdlab.core.registry import register_teacher_method
from kdlab.methods.base import CrossEntropy


@register_teacher_method("standard", paper="-")
class Standard(CrossEntropy):
    """Standard training: cross-entropy on the one-hot labels (the baseline every table compares against)."""
