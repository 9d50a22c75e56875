"""Bring-your-own arrays: a folder holding ``train.npz`` and ``test.npz``.

Each file holds ``x`` (N x C x H x W images, N x C x L sequences or N x D vectors, any float dtype) and ``y``
(N integer labels in [0, K)).  Any other array with N rows (e.g. ``p_star``) is kept as a per-sample extra.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from pydantic import PositiveInt

from kdlab.core.errors import DataError
from kdlab.core.registry import register_dataset
from kdlab.data.base import DataBundle, Split


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path}: {e}") from None


@register_dataset("arrays", input_shape="from the files", classes="from the files")
def arrays(root: str, num_classes: PositiveInt | None = None) -> DataBundle:
    """Your own data: ``root/train.npz`` and ``root/test.npz`` with arrays ``x`` and ``y``."""
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
    k = num_classes or _inferred_classes(folder, splits["train"].y, splits["test"].y)  # labels >= k: the bundle
    return DataBundle(name="arrays", train=splits["train"], test=splits["test"], num_classes=k,
                      input_shape=tuple(splits["train"].x.shape[1:]))


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
