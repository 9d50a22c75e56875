"""In-memory data sets and the batches every method receives.

A :class:`DataBundle` is a train and a test :class:`Split` of tensors plus the facts models and methods need
(number of classes, input shape).  Every batch carries the dataset index of each sample (``Batch.index``), which
index-keyed methods (SoTeacher's consistency buffer, CRD's memory) rely on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..engine.device import derive_seed
from ..errors import DataError

Augment = Callable[[Tensor, torch.Generator], Tensor]


class Batch(NamedTuple):
    x: Tensor
    y: Tensor
    index: Tensor


@dataclass
class Split:
    x: Tensor
    y: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataBundle:
    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] | None = None
    augment: Augment | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def kind(self) -> str:
        """'image' for (C, H, W) inputs, 'sequence' for (C, L)."""
        return {3: "image", 2: "sequence"}.get(len(self.input_shape), "vector")

    def check(self) -> DataBundle:
        """Fail before training on inputs a model cannot learn from (NaN/Inf, labels out of range)."""
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) == 0:
                raise DataError(f"{self.name}: the {split_name} split is empty")
            if tuple(split.x.shape[1:]) != tuple(self.input_shape):
                raise DataError(f"{self.name}: {split_name} inputs have shape {tuple(split.x.shape[1:])}, "
                                f"expected {tuple(self.input_shape)}")
            if not torch.isfinite(split.x).all():
                bad = int((~torch.isfinite(split.x)).flatten(1).any(1).nonzero()[0])
                raise DataError(f"{self.name}: {split_name} sample {bad} contains NaN or Inf")
            lo, hi = int(split.y.min()), int(split.y.max())
            if lo < 0 or hi >= self.num_classes:
                raise DataError(f"{self.name}: {split_name} labels span [{lo}, {hi}] but the data set has "
                                f"{self.num_classes} classes")
        return self


class ArrayLoader:
    """Batches of an in-memory split, kept on the training device; shuffling and augmentation are batched.

    The order of epoch ``e`` depends only on ``(seed, e)``, so an interrupted run that restarts epoch ``e`` sees
    exactly the batches it would have seen: resuming needs no saved RNG state.
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device, shuffle: bool = False,
                 drop_last: bool = False, augment: Augment | None = None, seed: int = 0):
        self.n = len(split)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.drop_last = drop_last and self.n >= batch_size
        self.augment = augment
        self.seed = seed
        self.x = split.x.to(device)
        self.y = split.y.to(device)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 1))
            order = torch.randperm(self.n, generator=g).to(self.device)
        else:
            order = torch.arange(self.n, device=self.device)
        aug_gen = None
        if self.augment is not None:
            aug_gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, epoch, 2))
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.x.index_select(0, idx)
            if aug_gen is not None:
                x = self.augment(x, aug_gen)
            yield Batch(x, self.y.index_select(0, idx), idx)

    __iter__ = epoch
