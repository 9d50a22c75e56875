"""Your own images, one folder per class, held in memory as uint8 and augmented batched on the device.

Two layouts: ``root/train/<class>/*`` + ``root/test/<class>/*`` (the test classes must be the train classes),
or ``root/<class>/*`` split into train and test per class (stratified) by ``test_fraction`` and ``split_seed``.
Images are decoded once (RGB), resized to ``image_size`` x ``image_size`` (bilinear, aspect ratio not kept) and
kept as uint8 (N, 3, S, S): up to :data:`MAX_IMAGES` images, beyond which a folder data set read image by image
(like ``tinyimagenet``) is the right tool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from kdlab.core.errors import DataError
from kdlab.core.registry import register_dataset
from kdlab.data._files import IMAGE_EXTENSIONS, image_files, one_line
from kdlab.data.augment import make_crop_flip
from kdlab.data.base import DataBundle, Split
from kdlab.data.transforms import Normalize

MAX_IMAGES = 100_000  # 100,000 x 3 x 64 x 64 uint8 = 1.2 GB: the most this data set holds in memory


def _classes(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataError(f"data.root: folder {folder} not found")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"data.root: {folder} holds no class folders (expected one sub-folder of images per class)")
    return names


def _listing(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for k, c in enumerate(classes):
        files = image_files(folder / c)
        if not files:
            raise DataError(f"data.root: class folder {folder / c} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        paths += [folder / c / f for f in files]
        labels += [k] * len(files)
    return paths, labels


def _load(paths: list[Path], size: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                img = im.convert("RGB").resize((size, size), Image.BILINEAR)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read image {path} ({one_line(e)})") from None
        out[i] = np.asarray(img).transpose(2, 0, 1)
    return out


def _stratified(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, round(fraction * n) images (at least one, and at least one left to train on) go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < 2:
            raise DataError(f"data.test_fraction: class {int(c)} has {len(idx)} image; a train/test split needs "
                            "at least 2 per class")
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@register_dataset("image-folder", input_shape="3xSxS (image_size)", classes="one per class folder")
def image_folder(root: str, image_size: Annotated[int, Field(ge=8, le=512)] = 32,
                 test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2,
                 split_seed: Annotated[int, Field(ge=0, lt=2**32)] = 0, augment: bool = True,
                 flip: bool = True) -> DataBundle:
    """Images in one folder per class: ``root/train/<class>`` + ``root/test/<class>``, or ``root/<class>``.

    ``image_size``: every image is resized to this square (RGB).  ``test_fraction`` / ``split_seed``: the
    stratified split of the one-folder layout (ignored when ``root/train`` and ``root/test`` exist).  Training
    augmentation (``augment``): random crop with zero padding ``image_size // 8`` (4 at 32, as CIFAR) and, with
    ``flip``, a horizontal flip, batched on the device.  Normalisation: the per-channel mean and std of the
    training pixels.  At most 100,000 images (held in memory as uint8).

    root: a folder with train/<class>/ and test/<class>/, or with one sub-folder of images per class
    image_size: side of the square every image is resized to
    test_fraction: the stratified fraction of each class held out as test (one-folder layout only)
    split_seed: seed of the train/test split (one-folder layout only)
    augment: random crop (zero padding image_size // 8) of the training images, batched on the device
    flip: with augment, also a random horizontal flip
    """
    folder = Path(root).expanduser()
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        classes = _classes(folder / "train")
        missing = [c for c in classes if not (folder / "test" / c).is_dir()]
        if missing:
            raise DataError(f"data.root: class folder(s) {', '.join(missing)} of {folder / 'train'} missing in "
                            f"{folder / 'test'}")
        extra = sorted(set(_classes(folder / "test")) - set(classes))
        if extra:
            raise DataError(f"data.root: {folder / 'test'} has class folder(s) {', '.join(extra)} that "
                            f"{folder / 'train'} lacks")
        train_paths, train_y = _listing(folder / "train", classes)
        test_paths, test_y = _listing(folder / "test", classes)
        _check_count(folder, len(train_paths) + len(test_paths))
        x_train, x_test = _load(train_paths, image_size), _load(test_paths, image_size)
        y_train, y_test = np.asarray(train_y, dtype=np.int64), np.asarray(test_y, dtype=np.int64)
    else:
        classes = _classes(folder)
        paths, y = _listing(folder, classes)
        _check_count(folder, len(paths))
        y = np.asarray(y, dtype=np.int64)
        tr, te = _stratified(y, test_fraction, split_seed)
        x = _load(paths, image_size)
        x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
    pixels = torch.from_numpy(x_train).float().div_(255)
    mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
    std = tuple(max(v, 1e-3) for v in pixels.std(dim=(0, 2, 3)).tolist())  # a constant channel stays finite
    return DataBundle(
        name="image-folder", train=Split(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        test=Split(torch.from_numpy(x_test), torch.from_numpy(y_test)), num_classes=len(classes),
        input_shape=(3, image_size, image_size), class_names=classes,
        augment=make_crop_flip(pad=max(1, image_size // 8), flip=flip) if augment else None,
        prepare=Normalize(mean, std), meta={"root": str(folder), "mean": mean, "std": std})


def _check_count(folder: Path, n: int) -> None:
    if n > MAX_IMAGES:
        raise DataError(f"data.root: {folder} holds {n} images, more than the {MAX_IMAGES} image-folder keeps in "
                        "memory; use a smaller subset")
