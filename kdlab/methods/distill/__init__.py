"""Distillation methods (registered in :data:`kdlab.registry.DISTILL_METHODS`)."""

from . import kd, none  # noqa: F401
