"""Bring-your-own arrays: a folder holding ``train.npz`` and ``test.npz``.

Each file holds ``x`` (N x C x H x W images, N x C x L sequences or N x D vectors, any float dtype) and ``y``
(N integer labels in [0, K)).  Any other array with N rows (e.g. ``p_star``) is kept as a per-sample extra.
Grey images need their channel axis: N x 1 x H x W, not N x H x W.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import Field, PositiveInt

from kdlab.core.errors import DataError
from kdlab.core.registry import register_dataset
from kdlab.data.base import DataBundle, Split
from kdlab.data.subsets import balanced_indices


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path}: {e}") from None


@register_dataset("arrays", input_shape="from the files", classes="from the files")
def arrays(root: str, num_classes: PositiveInt | None = None, normalize: bool = False,
           num_train: Annotated[int, Field(ge=2, le=10**9)] | None = None,
           subset_seed: Annotated[int, Field(ge=0, lt=2**32)] = 0) -> DataBundle:
    """Your own data: ``root/train.npz`` and ``root/test.npz`` with arrays ``x`` and ``y``.

    ``normalize``: subtract the training split's mean and divide by its std, per channel (axis 1 of x; per
    feature for N x D vectors), in both splits.  ``num_train``: keep a class-balanced subset of the training
    split, drawn with ``subset_seed``.

    root: the folder holding train.npz and test.npz
    num_classes: the class count, when some classes never occur in the labels (else the largest label + 1)
    normalize: standardise x with the training split's per-channel mean and std
    num_train: a class-balanced subset of the training split
    subset_seed: seed of the num_train subset
    """
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.root: folder {folder} not found; it must contain train.npz and test.npz "
                        "with arrays x (inputs) and y (integer labels)")
    splits = {}
    for name in ("train", "test"):
        path = folder / f"{name}.npz"
        if not path.is_file():
            raise DataError(f"data.root: {path} is missing (expected train.npz and test.npz in {folder})")
        arr = _read(path)
        if "x" not in arr or "y" not in arr:
            raise DataError(f"{path} must hold arrays 'x' and 'y' (found {sorted(arr)})")
        x, y = arr.pop("x"), arr.pop("y")
        if len(x) != len(y):
            raise DataError(f"{path}: x has {len(x)} rows but y has {len(y)}")
        if len(y) == 0:
            raise DataError(f"{path} holds no samples (x and y have 0 rows)")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: y must hold integer labels, got dtype {y.dtype}")
        if y.ndim != 1:
            raise DataError(f"{path}: y must be a vector of {len(y)} labels, got shape {y.shape}"
                            + (" (use y.ravel())" if y.ndim == 2 and y.shape[1] == 1 else ""))
        if x.ndim < 2:
            raise DataError(f"{path}: x must have one row per sample (N x D, N x C x L or N x C x H x W), got shape "
                            f"{x.shape}")
        if x.ndim == 3 and x.shape[1] == x.shape[2] and x.shape[1] >= 8:
            # N x C x L sequences are valid, but a square N x H x W is nearly always grey images
            warnings.warn(f"{path}: x has shape {x.shape}, read as N x C x L sequences; if these are images, add a "
                          "channel axis: x[:, None]", stacklevel=2)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
                or np.issubdtype(x.dtype, np.bool_)):
            raise DataError(f"{path}: x must hold numbers, got dtype {x.dtype}")
        if y.min() < 0:
            raise DataError(f"{path}: labels must be >= 0, got {int(y.min())}")
        extras = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arr.items() if len(v) == len(y)}
        splits[name] = Split(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                             torch.from_numpy(y.astype(np.int64)), extras)
    if splits["train"].x.shape[1:] != splits["test"].x.shape[1:]:
        raise DataError(f"{folder}: train inputs are {tuple(splits['train'].x.shape[1:])} but test inputs are "
                        f"{tuple(splits['test'].x.shape[1:])}")
    meta = {}
    if num_train is not None:
        tr = splits["train"]
        keep = torch.from_numpy(balanced_indices(tr.y.numpy(), num_train, subset_seed, "num_train"))
        splits["train"] = Split(tr.x[keep], tr.y[keep], {k: v[keep] for k, v in tr.extras.items()})
    if normalize:
        x = splits["train"].x
        dims = [d for d in range(x.dim()) if d != 1]
        mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True).clamp_min(1e-8)
        for split in splits.values():
            split.x = (split.x - mean) / std
        meta = {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
    k = num_classes or _inferred_classes(folder, splits["train"].y, splits["test"].y)  # labels >= k: the bundle
    return DataBundle(name="arrays", train=splits["train"], test=splits["test"], num_classes=k,
                      input_shape=tuple(splits["train"].x.shape[1:]), meta=meta)


def _inferred_classes(folder: Path, y_train: torch.Tensor, y_test: torch.Tensor) -> int:
    """The class count the labels imply (largest + 1), refused when some of those classes never occur in the
    training labels: one stray label (a 99 among 0..9) would otherwise make a 100-class model."""
    k = int(max(y_train.max(), y_test.max())) + 1
    present = set(torch.unique(torch.cat([y_train, y_test])).tolist())
    if len(present) < k:
        missing = sorted(set(range(min(k, 10 ** 6))) - present)
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"{folder}: the labels go up to {k - 1}, but {k - len(present)} of the classes 0..{k - 1} "
                        f"never occur in train.npz or test.npz (e.g. {shown}); fix the labels, or declare "
                        "data.num_classes if the data really lack some classes")
    return k
