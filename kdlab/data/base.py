"""Data sets and the batches every method receives.

A :class:`DataBundle` is a train and a test split plus the facts models and methods need (number of classes,
input shape); a run may set part of the training split aside first as a validation split (``val``, see
:func:`split_validation`: model selection) and a held-out split (``holdout``, see :func:`hold_out`: temperature
fitting).  A split is either held in memory (:class:`Split`: tensors, batched on the training device, with
batched augmentation) or read through a ``torch.utils.data.Dataset`` (:class:`DatasetSplit`: image folders,
per-image transforms in DataLoader worker processes).  Both give the same :class:`Batch` (x, y, index): every
batch carries the dataset index of each sample, which index-keyed methods (SoTeacher's consistency buffer, CRD's
memory) rely on.  Randomness of epoch ``e`` (order, augmentation) depends only on ``(seed, e)``.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
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
    val: Split | DatasetSplit | None = None  # validation split taken out of the training data (model selection)

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
    test transform (no random augmentation), a subset of them (a training split a validation split was taken
    from) included; in-memory splits are never augmented when evaluated."""
    ref = getattr(like, "dataset", None)
    view = _test_read(getattr(split, "dataset", None), ref)
    if view is None:
        return split
    return DatasetSplit(view, split.targets, split.extras)


def _test_read(ds: Any, ref: Any) -> Any:
    """``ds`` with ``ref``'s transform (None: nothing to change)."""
    if ds is None or not hasattr(ref, "transform"):
        return None
    if isinstance(ds, torch.utils.data.Subset):
        inner = _test_read(ds.dataset, ref)
        return None if inner is None else torch.utils.data.Subset(inner, ds.indices)
    if not hasattr(ds, "transform"):
        return None
    view = copy.copy(ds)
    view.transform = ref.transform
    return view


def subset(split: Split | DatasetSplit, index: Tensor) -> Split | DatasetSplit:
    """The samples ``index`` of a split (extras included)."""
    extras = {k: v[index] for k, v in split.extras.items()}
    if isinstance(split, Split):
        return Split(split.x[index], split.y[index], extras)
    return DatasetSplit(torch.utils.data.Subset(split.dataset, index.tolist()), split.targets[index], extras)


def _stratified(y: Tensor, num_classes: int, fraction: float, seed: int) -> list[Tensor]:
    """Per class, the indices of a seeded random ``fraction`` of its samples (rounded to the nearest count)."""
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in range(num_classes):
        members = (y == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        held.append(members[: int(round(fraction * len(members)))])
    return held


def _set_aside(bundle: DataBundle, held_idx: Tensor) -> tuple[Split | DatasetSplit, Split | DatasetSplit]:
    """(the training split without ``held_idx``, those samples read the way the test split is)."""
    keep = torch.ones(len(bundle.train), dtype=torch.bool)
    keep[held_idx] = False
    return (subset(bundle.train, keep.nonzero().flatten()),
            subset(evaluation_view(bundle.train, bundle.test), held_idx))


def hold_out(bundle: DataBundle, fraction: float, seed: int = 0) -> DataBundle:
    """A copy of ``bundle`` whose training split loses a stratified ``fraction`` to ``bundle.holdout``.

    The split depends only on the labels and ``seed``, so teachers and students of a study share it.
    """
    if fraction <= 0:
        return bundle
    held_idx = torch.cat(_stratified(bundle.train.y, bundle.num_classes, fraction, seed)).sort().values
    left = len(bundle.train) - len(held_idx)
    if len(held_idx) == 0 or left == 0:
        raise DataError(f"{bundle.name}: holdout {fraction} leaves an empty training or held-out split")
    if left < MIN_TRAIN_BATCH:
        raise DataError(_too_few(bundle.name, left, f" after holdout {fraction}"))
    train, held = _set_aside(bundle, held_idx)
    return replace(bundle, train=train, holdout=held)


#: the purpose part of the validation split's seed, ``derive_seed(run seed, VAL_SPLIT)``
VAL_SPLIT = 0x76616C  # "val"


def validation_seed(seed: int) -> int:
    """The seed of the validation split of the runs of seed ``seed`` (teachers and students alike)."""
    return derive_seed(seed, VAL_SPLIT)


def split_validation(bundle: DataBundle, fraction: float, seed: int) -> DataBundle:
    """A copy of ``bundle`` whose training split loses a stratified ``fraction`` (``data.val_fraction``) to
    ``bundle.val``, the split a run selects its best epoch on.

    ``seed`` is the run's seed: the split depends only on the labels and that seed, so every run of a seed
    (teachers and their students) trains and selects on the same samples, and each seed draws its own split.
    The validation samples are read the way the test split is (no augmentation).  Every class keeps at least one
    training sample; a class may have no validation sample (a small fraction of a rare class rounds to none).
    """
    if fraction <= 0:
        return bundle
    if bundle.val is not None or bundle.holdout is not None:
        raise ValueError("the validation split is taken from the whole training split, before any other")
    y = bundle.train.y
    picked = _stratified(y, bundle.num_classes, fraction, validation_seed(seed))
    for c, idx in enumerate(picked):
        n = int((y == c).sum())
        if n and len(idx) == n:
            raise ConfigError(f"data.val_fraction: {fraction} takes all {n} training sample{'s' * (n != 1)} of "
                              f"class {c} of {bundle.name} for validation, leaving none to train on; use a smaller "
                              "fraction")
    val_idx = torch.cat(picked).sort().values
    if len(val_idx) == 0:
        raise ConfigError(f"data.val_fraction: {fraction} of the {len(y)} training samples of {bundle.name} "
                          "selects no validation sample; use a larger fraction")
    left = len(y) - len(val_idx)
    if left < MIN_TRAIN_BATCH:
        raise ConfigError("data.val_fraction: " + _too_few(bundle.name, left, f" after val_fraction {fraction}"))
    train, val = _set_aside(bundle, val_idx)
    return replace(bundle, train=train, val=val)


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
