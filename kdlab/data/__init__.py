"""Data sets: registered loaders returning :class:`DataBundle` objects (in-memory or folder-backed splits)."""

from __future__ import annotations

import json
from functools import lru_cache

from kdlab.core.registry import DATASETS
from kdlab.data.base import (
    ArrayLoader,
    Batch,
    DataBundle,
    DatasetLoader,
    DatasetSplit,
    Split,
    hold_out,
    split_validation,
)

__all__ = ["ArrayLoader", "Batch", "DataBundle", "DatasetLoader", "DatasetSplit", "Split", "load_dataset"]


def load_dataset(spec, holdout: float = 0.0, seed: int | None = None) -> DataBundle:
    """Build (or reuse) the data set named by a config component ``{name: ..., **params}``.

    With ``data.val_fraction`` > 0 a stratified fraction of the training split, drawn from the run's ``seed``
    (required then), is set aside first as ``bundle.val`` (model selection); then, with ``holdout`` > 0, a
    stratified fraction of what is left as ``bundle.holdout`` (temperature fitting).  The data set itself is
    built once per parameters: the splits are cheap views of the cached one."""
    raw = spec.model_dump()
    val_fraction = raw.pop("val_fraction", 0.0)
    bundle = _cached(json.dumps(raw, sort_keys=True))
    if val_fraction > 0:
        if seed is None:
            raise ValueError("load_dataset: data.val_fraction needs the run's seed (the split is drawn from it)")
        bundle = split_validation(bundle, val_fraction, seed)
    return hold_out(bundle, holdout)


@lru_cache(maxsize=4)
def _cached(key: str) -> DataBundle:
    raw = json.loads(key)
    name = raw.pop("name")
    return DATASETS.get(name).obj(**raw).check()
