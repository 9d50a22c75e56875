"""Teacher-training methods (registered in :data:`kdlab.registry.TEACHER_METHODS`)."""

from . import standard  # noqa: F401
