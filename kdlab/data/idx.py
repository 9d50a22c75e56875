"""MNIST, Fashion-MNIST and KMNIST from their IDX files (the layout of http://yann.lecun.com/exdb/mnist/).

Four files, each plain or gzipped: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``.  They are looked for in ``root/<Name>/raw`` (where
torchvision's ``download`` puts them: Name is MNIST, FashionMNIST or KMNIST) and in ``root`` itself (e.g. Debian's
``dataset-fashion-mnist`` package, /usr/share/datasets/fashion-mnist).  An IDX file is a big-endian header (two
zero bytes, a type byte, 0x08 for unsigned bytes, the number of dimensions, then one 32-bit size per dimension)
followed by the values.  Images stay uint8 (N, 1, H, W) in memory; training augmentation is a random crop with
zero padding, batched on the device; ``prepare`` normalises with the data set's mean and std.

The Fashion-MNIST subset that ships inside kdlab (the quickstart's data), ``data: {name: fashion-mnist, root:
shipped}``: 2,000 training and 2,000 test images, 200 of each class in each split, drawn with
:func:`balanced_indices` and subset seed 0 (the full set's ``num_train=2000, num_test=2000, subset_seed=0``), kept at
28x28 in the IDX layout (gzipped, 1.7 MB).  Fashion-MNIST is Copyright (c) 2017 Zalando SE, MIT licence: the notice
is ``NOTICE`` beside the files.  ``python -m kdlab.data.idx [FULL_DIR]`` (:func:`write_subset`) rebuilds them from
the full set (by default Debian's copy); a test checks that it gives the shipped bytes.
"""

from __future__ import annotations

import gzip
import struct
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from kdlab.core.errors import ConfigError, DataError
from kdlab.core.registry import register_dataset
from kdlab.data._files import one_line
from kdlab.data.augment import make_crop_flip
from kdlab.data.base import DataBundle, Split
from kdlab.data.subsets import balanced_indices
from kdlab.data.transforms import Normalize

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"

# mean and std of the training pixels in [0, 1] (the values torchvision users normalise with)
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
KMNIST_STATS = ((0.1918,), (0.3483,))

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]

SHIPPED = "shipped"  # the data.root value that names the subset inside the package
SHIPPED_COUNTS = {"train": 2000, "test": 2000}

Count = Annotated[int, Field(ge=10, le=60_000)]
ImageSize = Annotated[int, Field(ge=1, le=28)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]


def read_idx(path: Path) -> np.ndarray:
    """The array an IDX file holds (unsigned bytes only); a short, corrupt or foreign file is a DataError."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        raw = bytearray(raw)  # a writable buffer: torch.from_numpy warns on read-only arrays
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: not a readable IDX file ({one_line(e)})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (the first two bytes must be zero)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX type 0x{raw[2]:02x}, expected 0x08 (unsigned bytes)")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - 4 - 4 * ndim
    if body != size:
        raise DataError(f"{path}: the header announces {'x'.join(map(str, dims))} = {size} bytes of data but the "
                        f"file holds {body} (truncated or corrupt; download it again)")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(root: Path, tv_name: str) -> Path | None:
    names = [n for pair in FILES.values() for n in pair]
    for folder in (root / tv_name / "raw", root):
        if all(_find(folder, n) for n in names):
            return folder
    return None


def _download(root: Path, tv_name: str) -> None:
    from torchvision import datasets

    try:
        getattr(datasets, tv_name)(str(root), train=True, download=True)
    except Exception as e:  # torchvision raises RuntimeError, URLError, OSError... when offline or blocked
        raise DataError(f"data.download: could not fetch {tv_name} into {root / tv_name / 'raw'} "
                        f"({one_line(e)})") from None


def _split(folder: Path, which: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    img_path, lab_path = (_find(folder, n) for n in FILES[which])
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3:
        raise DataError(f"{img_path}: expected N x H x W images, found shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{lab_path}: expected {len(images)} labels (one per image of {img_path.name}), found "
                        f"shape {labels.shape}")
    if len(labels) and labels.max() >= num_classes:
        raise DataError(f"{lab_path}: label {int(labels.max())} out of range [0, {num_classes - 1}]")
    return images, labels.astype(np.int64)


def _pool(x: np.ndarray, size: int) -> np.ndarray:
    """Average pooling of uint8 (N, H, W) by H // size, rounded back to uint8."""
    n, h, w = x.shape
    f = h // size
    pooled = x.reshape(n, size, f, size, f).mean(axis=(2, 4), dtype=np.float32)
    return np.rint(pooled).astype(np.uint8)


def idx_bundle(name: str, tv_name: str, root: str, download: bool, num_train: int | None, num_test: int | None,
               subset_seed: int, image_size: int, augment: bool, stats, class_names: list[str],
               fallback: str | None = None) -> DataBundle:
    if 28 % image_size:
        raise ConfigError(f"data.image_size: {image_size} must divide 28 (images are shrunk by average pooling): "
                          "one of 1, 2, 4, 7, 14, 28")
    if root == SHIPPED:
        if name != "fashion-mnist":
            raise ConfigError(f"data.root: only fashion-mnist ships with kdlab (a 2,000 + 2,000 image subset); give "
                              f"{name} the folder of its IDX files")
        root = str(shipped_folder())
    root_path = Path(root).expanduser()
    folder = _locate(root_path, tv_name)
    if folder is None and download:
        _download(root_path, tv_name)
        folder = _locate(root_path, tv_name)
    if folder is None and fallback and root == "data" and Path(fallback).is_dir():
        folder = _locate(Path(fallback), "")
    if folder is None:
        files = ", ".join(n for pair in FILES.values() for n in pair)
        raise DataError(f"data.root: the {name} IDX files ({files}, each may be .gz) are not in "
                        f"{root_path / tv_name / 'raw'} nor in {root_path}; put them there or set data.download=true")
    splits = {}
    for which, n, key in (("train", num_train, "num_train"), ("test", num_test, "num_test")):
        x, y = _split(folder, which, len(class_names))
        if n is not None:
            keep = balanced_indices(y, n, subset_seed + (which == "test"), key)
            x, y = x[keep], y[keep]
        if x.shape[1:] != (28, 28):
            raise DataError(f"{folder}: {which} images are {x.shape[1]}x{x.shape[2]}, expected 28x28")
        if image_size != 28:
            x = _pool(x, image_size)
        splits[which] = Split(torch.from_numpy(np.ascontiguousarray(x[:, None])), torch.from_numpy(y))
    mean, std = stats
    pad = 2 if image_size >= 14 else 1
    return DataBundle(
        name=name, train=splits["train"], test=splits["test"], num_classes=len(class_names),
        input_shape=(1, image_size, image_size), class_names=list(class_names),
        augment=make_crop_flip(pad=pad, flip=False) if augment else None, prepare=Normalize(mean, std),
        meta={"root": str(folder), "mean": mean, "std": std})


_DOC = """

    Training augmentation: a random crop with zero padding 2 (1 below 14 pixels), no flip, batched on the device.
    Normalisation: mean {mean}, std {std}.

    root: the folder holding {tv}/raw (torchvision's layout, where download puts the files) or the four IDX files
      themselves, plain or .gz
    download: fetch the files with torchvision's downloader when they are missing (needs the internet)
    num_train: a class-balanced subset of the training split, drawn with subset_seed (all 60,000 when unset)
    num_test: a class-balanced subset of the test split, drawn with subset_seed (all 10,000 when unset)
    subset_seed: seed of the num_train / num_test subsets
    image_size: 28, or a divisor of 28 (14, 7, 4, 2, 1) reached by average pooling
    augment: random crop with zero padding of the training images
"""


def _described(summary: str, tv: str, stats):
    """Sets the docstring before registration reads its first line (the catalogue's summary)."""
    def deco(fn):
        fn.__doc__ = summary + _DOC.format(tv=tv, mean=stats[0][0], std=stats[1][0])
        return fn

    return deco


@register_dataset("mnist", input_shape="1x28x28", classes=10)
@_described("MNIST handwritten digits (60,000 train / 10,000 test 28x28 grey images).", "MNIST", MNIST_STATS)
def mnist(root: str = "data", download: bool = False, num_train: Count | None = None,
          num_test: Count | None = None, subset_seed: Seed = 0, image_size: ImageSize = 28,
          augment: bool = True) -> DataBundle:
    return idx_bundle("mnist", "MNIST", root, download, num_train, num_test, subset_seed, image_size, augment,
                      MNIST_STATS, [str(i) for i in range(10)])


@register_dataset("fashion-mnist", input_shape="1x28x28", classes=10)
@_described("Fashion-MNIST (60,000 train / 10,000 test 28x28 grey clothing images), or Debian's copy.\n\n    "
            f"With the default root and no files there, Debian's dataset-fashion-mnist package ({DEBIAN_FASHION}) "
            "is read.  root: shipped reads the 2,000 + 2,000 image subset (200 per class and split, MIT licence) "
            "inside kdlab: the full set's num_train=2000, num_test=2000, subset_seed=0.",
            "FashionMNIST", FASHION_STATS)
def fashion_mnist(root: str = "data", download: bool = False, num_train: Count | None = None,
                  num_test: Count | None = None, subset_seed: Seed = 0, image_size: ImageSize = 28,
                  augment: bool = True) -> DataBundle:
    return idx_bundle("fashion-mnist", "FashionMNIST", root, download, num_train, num_test, subset_seed, image_size,
                      augment, FASHION_STATS, FASHION_CLASSES, fallback=DEBIAN_FASHION)


@register_dataset("kmnist", input_shape="1x28x28", classes=10)
@_described("Kuzushiji-MNIST (60,000 train / 10,000 test 28x28 grey cursive Japanese characters).", "KMNIST",
            KMNIST_STATS)
def kmnist(root: str = "data", download: bool = False, num_train: Count | None = None,
           num_test: Count | None = None, subset_seed: Seed = 0, image_size: ImageSize = 28,
           augment: bool = True) -> DataBundle:
    return idx_bundle("kmnist", "KMNIST", root, download, num_train, num_test, subset_seed, image_size, augment,
                      KMNIST_STATS, KMNIST_CLASSES)


def shipped_folder() -> Path:
    return Path(str(resources.files("kdlab") / "data" / "fashion_mnist_subset"))


def idx_bytes(a: np.ndarray) -> bytes:
    """``a`` (uint8) in the IDX layout: two zero bytes, type 0x08, the number of dimensions, big-endian sizes."""
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + np.ascontiguousarray(a).tobytes()


def write_subset(full: Path, out: Path) -> None:
    """Write the shipped subset of the full Fashion-MNIST IDX files in ``full`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for which, (img_name, lab_name) in FILES.items():
        x, y = _split(full, which, len(FASHION_CLASSES))
        keep = balanced_indices(y, SHIPPED_COUNTS[which], int(which == "test"), f"num_{which}")  # as idx_bundle
        for name, a in ((img_name, x[keep]), (lab_name, y[keep].astype(np.uint8))):
            # mtime 0: the same bytes every time they are written
            (out / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(a), compresslevel=9, mtime=0))


if __name__ == "__main__":
    import sys

    write_subset(Path(sys.argv[1] if len(sys.argv) > 1 else DEBIAN_FASHION), shipped_folder())
