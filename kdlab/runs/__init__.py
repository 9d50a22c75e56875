"""Single runs, from a config to a run folder: train a teacher (:mod:`.teacher`), distil one student or a group
(:mod:`.student`), evaluate (:mod:`.evaluate`) and export (:mod:`.export`) a checkpoint.  The run folder itself is
:class:`~kdlab.runs.folder.RunFolder`; a run's config, folder and teacher are resolved in :mod:`.resolve`."""

import importlib

# imported on first use: ``import kdlab.runs.folder`` should not import the training loop
_LAZY = {
    "train_teacher": ".teacher", "distill": ".student", "distill_group": ".student", "evaluate": ".evaluate",
    "RunResult": ".summary", "RunSummary": ".summary", "RunFolder": ".folder", "load_teacher": ".resolve",
    "resolve_checkpoint": ".resolve", "checkpoint_model": ".resolve", "TeacherRef": ".resolve",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
