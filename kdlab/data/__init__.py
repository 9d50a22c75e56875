"""Data sets: registered loaders returning :class:`DataBundle` objects (in-memory or folder-backed splits)."""

from __future__ import annotations

import json
from functools import lru_cache

from kdlab.core.registry import DATASETS
from kdlab.data.base import ArrayLoader, Batch, DataBundle, DatasetLoader, DatasetSplit, Split, hold_out

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
