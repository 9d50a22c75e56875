"""CIFAR-10 and CIFAR-100 from the "python version" folders of https://www.cs.toronto.edu/~kriz/cifar.html.

``cifar-10-batches-py`` holds data_batch_1..5, test_batch and batches.meta; ``cifar-100-python`` holds train,
test and meta.  Each file is a pickled dict with byte keys: b'data' is N x 3072 uint8 (channel-major 3x32x32),
labels are b'labels' (CIFAR-10) or b'fine_labels' (CIFAR-100), class names b'label_names' /
b'fine_label_names' in the meta file.

``root`` is the folder that contains the batches folder (torchvision's convention, and where ``download``
unpacks it), or the batches folder itself.  The images are held in memory as uint8 (N, 3, 32, 32); training
augmentation is the papers' random crop 32 with zero padding 4 + horizontal flip (RepDistiller / CRD and
SoTeacher train_transform), done batched on the training device on the raw pixels; ``prepare`` then turns pixels
into normalised floats (:class:`~kdlab.data.transforms.Normalize`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.core.errors import DataError
from kdlab.core.registry import register_dataset
from kdlab.data._files import one_line
from kdlab.data.augment import make_crop_flip
from kdlab.data.base import DataBundle, Split
from kdlab.data.transforms import CIFAR10_STATS, CIFAR100_STATS, Normalize

SITE = "https://www.cs.toronto.edu/~kriz/cifar.html"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays only: reading a data folder never runs code
    from it (a pickle can otherwise call any importable function)."""

    _allowed = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            # encoding='bytes' reads the Python 2 strings of the original files as bytes (the site's recipe)
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any failure to parse means the file is not a CIFAR batch
        raise DataError(f"{path}: not a readable CIFAR pickle ({one_line(e)}); download it again "
                        f"from {SITE}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _images_labels(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = read_batch(path)
    data, labels = d.get(b"data"), d.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected b'data' as an N x 3072 uint8 array, found {found}")
    if labels is None or len(labels) != len(data):
        n = "none" if labels is None else len(labels)
        raise DataError(f"{path}: expected {label_key!r} with one label per image ({len(data)}), found {n}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels span [{labels.min()}, {labels.max()}], expected [0, {num_classes - 1}]")
    return data.reshape(-1, 3, 32, 32), labels


def _class_names(path: Path, key: bytes, num_classes: int) -> list[str]:
    names = read_batch(path).get(key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise DataError(f"{path}: expected {key!r} with {num_classes} class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _locate(root: str, base: str, files: list[str], title: str, download: bool, tv_class: str) -> Path:
    """The batches folder: ``root/base`` or ``root`` itself; downloaded into ``root`` when asked and missing."""
    root_path = Path(root).expanduser()
    candidates = [root_path / base, root_path]

    def complete(folder: Path) -> bool:
        return all((folder / f).is_file() for f in files)

    def partial(folder: Path) -> bool:
        return folder.is_dir() and (folder.name == base or any((folder / f).exists() for f in files))

    found = next((c for c in candidates if complete(c)), None)
    if found is None and download:
        _download(root_path, tv_class)
        found = next((c for c in candidates if complete(c)), None)
    if found is not None:
        return found
    how = f"download {title} (python version) from {SITE} and unpack it there, or set data.download=true"
    folder = next((c for c in candidates if partial(c)), None)
    if folder is None:
        raise DataError(f"data.root: {root_path / base} not found; {how}")
    missing = [f for f in files if not (folder / f).is_file()]
    raise DataError(f"data.root: {folder} is incomplete ({', '.join(missing)} missing); {how}")


def _download(root: Path, tv_class: str) -> None:
    """torchvision's downloader: the archive URL and checksum torchvision ships for this data set."""
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    cls = getattr(datasets, tv_class)
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except (OSError, RuntimeError) as e:
        raise DataError(f"data.download: could not fetch {cls.url} into {root} ({one_line(e)})") from None


def _bundle(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
            class_names: list[str], stats, augment: bool, folder: Path) -> DataBundle:
    def split(xy):
        return Split(torch.from_numpy(np.ascontiguousarray(xy[0])), torch.from_numpy(xy[1]))

    mean, std = stats
    return DataBundle(
        name=name, train=split(train), test=split(test), num_classes=len(class_names), input_shape=(3, 32, 32),
        class_names=class_names, augment=make_crop_flip(pad=4, flip=True) if augment else None,
        prepare=Normalize(mean, std), meta={"root": str(folder), "mean": mean, "std": std})


@register_dataset("cifar10", input_shape="3x32x32", classes=10)
def cifar10(root: str = "data", download: bool = False, augment: bool = True) -> DataBundle:
    """CIFAR-10 (50,000 train / 10,000 test 32x32 images) from ``root/cifar-10-batches-py``.

    Training augmentation (``augment``): random crop 32 with zero padding 4 + horizontal flip, batched on the
    device.  Normalisation: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).

    root: the folder holding cifar-10-batches-py (or that folder itself)
    download: fetch the archive into root when the files are not there (torchvision's downloader; needs the
      internet)
    augment: random crop 32 with zero padding 4 + horizontal flip of the training images
    """
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    folder = _locate(root, "cifar-10-batches-py", files, "CIFAR-10", download, "CIFAR10")
    parts = [_images_labels(folder / f"data_batch_{i}", b"labels", 10) for i in range(1, 6)]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _images_labels(folder / "test_batch", b"labels", 10)
    names = _class_names(folder / "batches.meta", b"label_names", 10)
    return _bundle("cifar10", train, test, names, CIFAR10_STATS, augment, folder)


@register_dataset("cifar100", input_shape="3x32x32", classes=100)
def cifar100(root: str = "data", download: bool = False, augment: bool = True) -> DataBundle:
    """CIFAR-100 (50,000 train / 10,000 test 32x32 images, fine labels) from ``root/cifar-100-python``.

    Training augmentation (``augment``): random crop 32 with zero padding 4 + horizontal flip, batched on the
    device.  Normalisation: mean (0.5071, 0.4867, 0.4408), std (0.2675, 0.2565, 0.2761) (the CRD code's values).

    root: the folder holding cifar-100-python (or that folder itself)
    download: fetch the archive into root when the files are not there (torchvision's downloader; needs the
      internet)
    augment: random crop 32 with zero padding 4 + horizontal flip of the training images
    """
    folder = _locate(root, "cifar-100-python", ["train", "test", "meta"], "CIFAR-100", download, "CIFAR100")
    train = _images_labels(folder / "train", b"fine_labels", 100)
    test = _images_labels(folder / "test", b"fine_labels", 100)
    names = _class_names(folder / "meta", b"fine_label_names", 100)
    return _bundle("cifar100", train, test, names, CIFAR100_STATS, augment, folder)
