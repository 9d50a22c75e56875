"""Data sets: registered loaders returning :class:`DataBundle` objects (in-memory or folder-backed splits)."""

from __future__ import annotations

import json
from functools import lru_cache

from .._autoload import import_submodules
from ..registry import DATASETS
from .base import ArrayLoader, Batch, DataBundle, DatasetLoader, DatasetSplit, Split, hold_out

import_submodules(__name__, __path__)  # every data set module registers itself

__all__ = ["ArrayLoader", "Batch", "DataBundle", "DatasetLoader", "DatasetSplit", "Split", "load_dataset"]


def load_dataset(spec, holdout: float = 0.0) -> DataBundle:
    """Build (or reuse) the data set named by a config component ``{name: ..., **params}``; with ``holdout`` > 0
    a stratified fraction of the training split is set aside as ``bundle.holdout``."""
    return hold_out(_cached(json.dumps(spec.model_dump(), sort_keys=True)), holdout)


@lru_cache(maxsize=4)
def _cached(key: str) -> DataBundle:
    raw = json.loads(key)
    name = raw.pop("name")
    return DATASETS.get(name).obj(**raw).check()
