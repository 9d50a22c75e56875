"""Data sets and the batches every method receives.

A :class:`DataBundle` is a train and a test split plus the facts models and methods need (number of classes,
input shape).  A split is either held in memory (:class:`Split`: tensors, batched on the training device, with
batched augmentation) or read through a ``torch.utils.data.Dataset`` (:class:`DatasetSplit`: image folders,
per-image transforms in DataLoader worker processes).  Both give the same :class:`Batch` (x, y, index): every
batch carries the dataset index of each sample, which index-keyed methods (SoTeacher's consistency buffer, CRD's
memory) rely on.  Randomness of epoch ``e`` (order, augmentation) depends only on ``(seed, e)``.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from kdlab.core.device import derive_seed
from kdlab.core.errors import ConfigError, DataError

Augment = Callable[[Tensor, torch.Generator], Tensor]
Prepare = Callable[[Tensor], Tensor]


class Batch(NamedTuple):
    x: Tensor
    y: Tensor
    index: Tensor
    #: ``(start, stop, size)``: these are rows ``start:stop`` of a global batch of ``size`` samples (training
    #: batches; with several processes each holds its part).  None: the batch is the whole of itself.
    part: tuple[int, int, int] | None = None


def batch_part(batch: Batch) -> tuple[int, int, int]:
    """``(start, stop, size)`` of ``batch`` within its global batch."""
    if batch.part is None:
        n = int(batch.y.shape[0])
        return 0, n, n
    return batch.part


@dataclass
class Split:
    """An in-memory split.  ``x`` may be stored compactly (e.g. uint8 images); ``DataBundle.prepare`` turns a
    batch of it into model inputs on the device."""

    x: Tensor
    y: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DatasetSplit:
    """A split read by a ``torch.utils.data.Dataset`` whose items are ``(input tensor, label)``."""

    dataset: Any
    targets: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def y(self) -> Tensor:
        return self.targets


class Loader(Protocol):
    def __len__(self) -> int: ...

    def epoch(self, epoch: int = 0) -> Iterator[Batch]: ...


@dataclass
class DataBundle:
    name: str
    train: Split | DatasetSplit
    test: Split | DatasetSplit
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] | None = None
    augment: Augment | None = None  # batched training augmentation of in-memory splits, on the device
    prepare: Prepare | None = None  # batched conversion to model inputs (after augmentation), e.g. normalisation
    meta: dict[str, Any] = field(default_factory=dict)
    holdout: Split | DatasetSplit | None = None  # held out of the training data (temperature fitting)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def kind(self) -> str:
        """'image' for (C, H, W) inputs, 'sequence' for (C, L)."""
        return {3: "image", 2: "sequence"}.get(len(self.input_shape), "vector")

    def train_loader(self, batch_size: int, device: torch.device, seed: int = 0, drop_last: bool = False,
                     num_workers: int = 0, shard: tuple[int, int] = (0, 1)) -> Loader:
        """``batch_size`` is the global batch; with ``shard = (rank, world)`` this process gets its part."""
        return _loader(self.train, batch_size, device, True, drop_last, self.augment, self.prepare, seed,
                       num_workers, shard)

    def eval_loader(self, split: str | Split | DatasetSplit = "test", batch_size: int = 512,
                    device: torch.device | str = "cpu", num_workers: int = 0,
                    shard: tuple[int, int] = (0, 1)) -> Loader:
        s = getattr(self, split) if isinstance(split, str) else split
        return _loader(s, batch_size, torch.device(device), False, False, None, self.prepare, 0, num_workers, shard)

    def check(self) -> DataBundle:
        """Fail before training on inputs a model cannot learn from (NaN/Inf, labels out of range)."""
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) == 0:
                raise DataError(f"{self.name}: the {split_name} split is empty")
            if split_name == "train" and len(split) < MIN_TRAIN_BATCH:
                raise DataError(_too_few(self.name, len(split)))
            if isinstance(split, Split):
                if tuple(split.x.shape[1:]) != tuple(self.input_shape):
                    raise DataError(f"{self.name}: {split_name} inputs have shape {tuple(split.x.shape[1:])}, "
                                    f"expected {tuple(self.input_shape)}")
                if split.x.is_floating_point() and not torch.isfinite(split.x).all():
                    bad = int((~torch.isfinite(split.x)).flatten(1).any(1).nonzero()[0])
                    raise DataError(f"{self.name}: {split_name} sample {bad} contains NaN or Inf")
            lo, hi = int(split.y.min()), int(split.y.max())
            if lo < 0 or hi >= self.num_classes:
                raise DataError(f"{self.name}: {split_name} labels span [{lo}, {hi}] but the data set has "
                                f"{self.num_classes} classes")
        return self


def _loader(split, batch_size, device, shuffle, drop_last, augment, prepare, seed, num_workers,
            shard=(0, 1)) -> Loader:
    if shuffle and batch_size < shard[1]:
        raise ConfigError(f"train.batch_size: {batch_size} is the global batch; it must be at least the number of "
                          f"processes ({shard[1]})")
    if isinstance(split, Split):
        return ArrayLoader(split, batch_size, device, shuffle=shuffle, drop_last=drop_last, augment=augment,
                           prepare=prepare, seed=seed, shard=shard)
    return DatasetLoader(split, batch_size, device, shuffle=shuffle, drop_last=drop_last, prepare=prepare,
                         seed=seed, num_workers=num_workers, shard=shard)


# a training batch of one sample is dropped: batch norm cannot normalise it (the step would fail)
MIN_TRAIN_BATCH = 2


def _too_few(name: str, n: int, after: str = "") -> str:
    return (f"{name}: the training split has {n} sample{'s' if n != 1 else ''}{after}; training needs at least "
            f"{MIN_TRAIN_BATCH} (batch norm cannot normalise a batch of one)")


def batch_plan(n: int, batch_size: int, order: Tensor, drop_last: bool, shard: tuple[int, int], min_size: int = 1
               ) -> list[tuple[Tensor, slice]]:
    """The global batches of ``order`` and, for process ``rank`` of ``world``, its contiguous part of each.

    Every process sees the same global batches, so the union of their parts is the single-process batch; a final
    global batch smaller than ``world`` is dropped when training on several processes (a process with no sample
    could not take part in the step), and one that would leave a process fewer than ``min_size`` samples
    (training: :data:`MIN_TRAIN_BATCH`, as batch norm needs; one process drops a final batch of one sample, so
    does each process of a job).
    """
    rank, world = shard
    out = []
    for b in range(0, n, batch_size):
        idx = order[b:b + batch_size]
        if len(idx) < batch_size and (drop_last or len(idx) < world * min_size):  # a part below min_size
            break
        bounds = [len(idx) * r // world for r in range(world + 1)]
        out.append((idx, slice(bounds[rank], bounds[rank + 1])))
    return out


def batch_count(n: int, batch_size: int, drop_last: bool, world: int = 1, min_size: int = 1) -> int:
    """``len(batch_plan(n, batch_size, ...))`` without building the plan (it is the same for every order)."""
    full, rest = divmod(n, batch_size)
    return full + int(rest > 0 and not drop_last and rest >= world * min_size)


def shard_range(n: int, shard: tuple[int, int]) -> tuple[int, int]:
    """The contiguous part ``[start, stop)`` of ``n`` evaluation samples that process ``rank`` of ``world`` reads."""
    rank, world = shard
    return n * rank // world, n * (rank + 1) // world


class ArrayLoader:
    """Batches of an in-memory split, kept on the training device; shuffling and augmentation are batched.

    The order of epoch ``e`` depends only on ``(seed, e)``, so an interrupted run that restarts epoch ``e`` sees
    exactly the batches it would have seen: resuming needs no saved RNG state.  With ``shard = (rank, world)``
    each process takes its part of every global training batch (augmented as a whole first, so the union of the
    parts equals the single-process batch) or, for evaluation (no shuffling), its contiguous part of the split.
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device, shuffle: bool = False,
                 drop_last: bool = False, augment: Augment | None = None, prepare: Prepare | None = None,
                 seed: int = 0, shard: tuple[int, int] = (0, 1)):
        self.n = len(split)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.drop_last = drop_last and self.n >= batch_size
        self.augment = augment
        self.prepare = prepare
        self.seed = seed
        self.shard = shard
        self.lo, self.hi = (0, self.n) if shuffle else shard_range(self.n, shard)
        self.x = split.x.to(device)
        self.y = split.y.to(device)

    def _plan(self, order: Tensor) -> list[tuple[Tensor, slice]]:
        if self.shuffle:
            return batch_plan(self.n, self.batch_size, order, self.drop_last, self.shard, MIN_TRAIN_BATCH)
        return batch_plan(self.hi - self.lo, self.batch_size, order[self.lo:self.hi], False, (0, 1))

    def __len__(self) -> int:
        if self.shuffle:
            return batch_count(self.n, self.batch_size, self.drop_last, self.shard[1], MIN_TRAIN_BATCH)
        return batch_count(self.hi - self.lo, self.batch_size, False)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 1))
            order = torch.randperm(self.n, generator=g).to(self.device)
        else:
            order = torch.arange(self.n, device=self.device)
        aug_gen = None
        if self.augment is not None:
            aug_gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, epoch, 2))
        for idx, part in self._plan(order):
            x = self.x.index_select(0, idx)
            if aug_gen is not None:
                x = self.augment(x, aug_gen)
            size = len(idx)
            x, idx = x[part], idx[part]
            if self.prepare is not None:
                x = self.prepare(x)
            yield Batch(x, self.y.index_select(0, idx), idx, (part.start, part.stop, size) if self.shuffle else None)

    __iter__ = epoch


class _SeededItems(torch.utils.data.Dataset):
    """Reads item ``i`` with the RNGs seeded from ``(epoch seed, i)``: its random transform depends on nothing
    else, whichever worker process reads it and however many there are."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        i, epoch_seed = key
        s = derive_seed(epoch_seed, i)
        if torch.utils.data.get_worker_info() is not None:  # a worker process: its random state is its own
            torch.manual_seed(s)
            random.seed(s)
            x, y = self.dataset[i]
            return x, y, i
        # in the training process (num_workers 0): leave its random streams as they were
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            try:
                x, y = self.dataset[i]
            finally:
                random.setstate(py_state)
        return x, y, i


class _EpochBatches(torch.utils.data.Sampler):
    """Yields this process's batches of ``(index, epoch seed)`` keys; the order is a function of the epoch seed."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, shard: tuple[int, int]):
        self.n, self.batch_size, self.shuffle, self.drop_last, self.shard = n, batch_size, shuffle, drop_last, shard
        self.epoch_seed = 0
        self.parts: list[tuple[int, int, int] | None] = []  # of the batches of the last __iter__, in order

    def _plan(self) -> list[tuple[list[int], tuple[int, int, int] | None]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch_seed))
            return [(idx[part].tolist(), (part.start, part.stop, len(idx)))
                    for idx, part in batch_plan(self.n, self.batch_size, order, self.drop_last, self.shard,
                                                MIN_TRAIN_BATCH)]
        lo, hi = shard_range(self.n, self.shard)
        return [(idx.tolist(), None)
                for idx, _ in batch_plan(hi - lo, self.batch_size, torch.arange(lo, hi), False, (0, 1))]

    def __len__(self) -> int:
        if self.shuffle:
            return batch_count(self.n, self.batch_size, self.drop_last, self.shard[1], MIN_TRAIN_BATCH)
        lo, hi = shard_range(self.n, self.shard)
        return batch_count(hi - lo, self.batch_size, False)

    def __iter__(self):
        plan = self._plan()
        self.parts = [part for _, part in plan]
        return iter([[(i, self.epoch_seed) for i in keys] for keys, _ in plan])


class DatasetLoader:
    """Batches of a :class:`DatasetSplit` through a ``DataLoader`` (worker processes apply per-image transforms).

    The order of epoch ``e`` and the random transform of each item derive from ``(seed, e, index)`` only, so an
    epoch is reproducible with any number of (persistent) workers.
    """

    def __init__(self, split: DatasetSplit, batch_size: int, device: torch.device, shuffle: bool = False,
                 drop_last: bool = False, prepare: Prepare | None = None, seed: int = 0, num_workers: int = 0,
                 shard: tuple[int, int] = (0, 1)):
        self.device = device
        self.prepare = prepare
        self.seed = seed
        self.shuffle = shuffle
        self.sampler = _EpochBatches(len(split), batch_size, shuffle, drop_last and len(split) >= batch_size, shard)
        self.loader = torch.utils.data.DataLoader(
            _SeededItems(split.dataset), batch_sampler=self.sampler, num_workers=num_workers,
            pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
            generator=torch.Generator())  # its per-epoch base seed (unused: items seed themselves) not from torch's

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        self.sampler.epoch_seed = derive_seed(self.seed, epoch, 1)
        nb = self.device.type == "cuda"
        try:
            batches = iter(self.loader)  # the sampler plans the epoch here
            for part, (x, y, idx) in zip(self.sampler.parts, batches):
                x = x.to(self.device, non_blocking=nb)
                if self.prepare is not None:
                    x = self.prepare(x)
                yield Batch(x, y.to(self.device, non_blocking=nb), idx.to(self.device, non_blocking=nb), part)
        except DataError as e:
            # a worker's error comes back with its traceback in the message: keep the original one line
            last = str(e).strip().splitlines()[-1]
            raise DataError(last.split("DataError: ", 1)[-1]) from None

    __iter__ = epoch


def evaluation_view(split: Split | DatasetSplit, like: Split | DatasetSplit) -> Split | DatasetSplit:
    """``split`` read the way ``like`` (the test split) is: for file data sets, the training files through the
    test transform (no random augmentation); in-memory splits are never augmented when evaluated."""
    ds, ref = getattr(split, "dataset", None), getattr(like, "dataset", None)
    if ds is None or not hasattr(ds, "transform") or not hasattr(ref, "transform"):
        return split
    view = copy.copy(ds)
    view.transform = ref.transform
    return DatasetSplit(view, split.targets, split.extras)


def subset(split: Split | DatasetSplit, index: Tensor) -> Split | DatasetSplit:
    """The samples ``index`` of a split (extras included)."""
    extras = {k: v[index] for k, v in split.extras.items()}
    if isinstance(split, Split):
        return Split(split.x[index], split.y[index], extras)
    return DatasetSplit(torch.utils.data.Subset(split.dataset, index.tolist()), split.targets[index], extras)


def hold_out(bundle: DataBundle, fraction: float, seed: int = 0) -> DataBundle:
    """A copy of ``bundle`` whose training split loses a stratified ``fraction`` to ``bundle.holdout``.

    The split depends only on the labels and ``seed``, so teachers and students of a study share it.
    """
    if fraction <= 0:
        return bundle
    y = bundle.train.y
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in range(bundle.num_classes):
        members = (y == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        held.append(members[: int(round(fraction * len(members)))])
    held_idx = torch.cat(held).sort().values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[held_idx] = False
    if len(held_idx) == 0 or not keep.any():
        raise DataError(f"{bundle.name}: holdout {fraction} leaves an empty training or held-out split")
    if int(keep.sum()) < MIN_TRAIN_BATCH:
        raise DataError(_too_few(bundle.name, int(keep.sum()), f" after holdout {fraction}"))
    from dataclasses import replace

    return replace(bundle, train=subset(bundle.train, keep.nonzero().flatten()),
                   holdout=subset(evaluation_view(bundle.train, bundle.test), held_idx))


def fingerprint(bundle: DataBundle) -> str | None:
    """A short hash of the training and test data (shapes, every label, an even sample of 1024 inputs per
    split): a run records it, and resuming on other data (the files replaced between a kill and the resume) is
    refused.  None for splits that are not held in memory (image folders read lazily)."""
    import hashlib

    h = hashlib.sha256()
    for name in ("train", "test"):
        split = getattr(bundle, name, None)
        x, y = getattr(split, "x", None), getattr(split, "y", None)
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            return None
        idx = torch.linspace(0, max(len(y) - 1, 0), steps=min(len(y), 1024)).long()
        h.update(f"{name}{tuple(x.shape)}{x.dtype}".encode())
        h.update(x[idx].detach().cpu().contiguous().numpy().tobytes())
        h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
