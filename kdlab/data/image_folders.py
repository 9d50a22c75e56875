"""Image-folder data sets: Tiny-ImageNet-200 and ImageNet, read image by image by DataLoader workers.

Each split is a :class:`~kdlab.data.base.DatasetSplit` over :class:`ImageFiles`: workers decode a JPEG, apply
the per-image transforms of :mod:`kdlab.data.transforms` and return uint8 tensors; ``prepare`` normalises the
batch on the training device.  ``train.num_workers`` sets the number of worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from kdlab.core.errors import ConfigError, DataError
from kdlab.core.registry import register_dataset
from kdlab.data._files import image_files, one_line
from kdlab.data.base import DataBundle, DatasetSplit
from kdlab.data.transforms import (
    IMAGENET_STATS,
    TINYIMAGENET_STATS,
    Normalize,
    imagenet_transforms,
    tinyimagenet_transforms,
)

ImageSize = Annotated[int, Field(ge=8)]  # _check_size repeats it for direct calls

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_LAYOUT = ("wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
               "val/val_annotations.txt")


class ImageFiles(torch.utils.data.Dataset):
    """Item i: the image file ``root/paths[i]`` as RGB, through ``transform``, with its label ``targets[i]``.

    Paths are kept in one numpy byte array rather than a list of Python strings: forked workers then share its
    pages instead of copying every string object they touch (reference counts are written on access).
    """

    def __init__(self, root: Path, paths: list[str], targets: list[int], transform: Any):
        self.root = str(root)
        self.paths = np.array([p.encode() for p in paths], dtype=bytes)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> str:
        return f"{self.root}/{self.paths[i].decode()}"

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path = self.path(i)
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")  # Tiny-ImageNet and ImageNet hold some greyscale and CMYK JPEGs
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image {path} ({one_line(e)})") from None
        return self.transform(img), int(self.targets[i])


def _split(root: Path, paths: list[str], targets: list[int], transform: Any) -> DatasetSplit:
    return DatasetSplit(ImageFiles(root, paths, targets, transform), torch.tensor(targets, dtype=torch.long))


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path} ({one_line(e)})") from None


def _class_images(folder: Path, wnid: str, listed_in: str) -> list[str]:
    if not folder.is_dir():
        raise DataError(f"data.root: {folder} not found ({listed_in} lists class {wnid})")
    files = image_files(folder)
    if not files:
        raise DataError(f"data.root: {folder} holds no images")
    return files


def _check_size(name: str, image_size: int) -> None:
    if image_size < 8:
        raise ConfigError(f"{name}: image_size must be at least 8, got {image_size}")


def _tiny_folder(root: str) -> Path:
    path = Path(root).expanduser()
    for cand in (path, path / "tiny-imagenet-200"):
        if (cand / "wnids.txt").is_file():
            return cand
    if not path.is_dir():
        raise DataError(f"data.root: {path} not found; download Tiny-ImageNet-200 from {TINY_URL} and unpack it "
                        f"there (it holds {TINY_LAYOUT})")
    raise DataError(f"data.root: {path / 'wnids.txt'} not found; data.root must be the tiny-imagenet-200 folder "
                    f"({TINY_LAYOUT})")


def _tiny_names(folder: Path, wnids: list[str]) -> list[str]:
    """The first synonym of each class in words.txt ('n01443537<TAB>goldfish, Carassius auratus'); the wnid
    when words.txt is absent or does not name it."""
    words = {}
    if (folder / "words.txt").is_file():
        for line in _read_lines(folder / "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    return [words.get(w) or w for w in wnids]


def _tiny_val(folder: Path, class_index: dict[str, int]) -> tuple[list[str], list[int]]:
    ann = folder / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"data.root: {ann} not found; it gives the class of each val image ({TINY_LAYOUT})")
    present = set(image_files(folder / "val" / "images"))
    paths, targets = [], []
    for n, line in enumerate(_read_lines(ann), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{ann} line {n}: expected '<file><TAB><wnid><TAB><box>', found {line!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in class_index:
            raise DataError(f"{ann} line {n}: wnid {wnid} is not in wnids.txt")
        if name not in present:
            raise DataError(f"{ann} line {n}: image {folder / 'val' / 'images' / name} not found")
        paths.append(f"val/images/{name}")
        targets.append(class_index[wnid])
    if not paths:
        raise DataError(f"{ann} lists no images")
    return paths, targets


@register_dataset("tinyimagenet", input_shape="3x64x64 (image_size)", classes=200)
def tinyimagenet(root: str = "data/tiny-imagenet-200", image_size: ImageSize = 64,
                 augment: bool = True) -> DataBundle:
    """Tiny-ImageNet-200 (100,000 train / 10,000 val 64x64 images; val serves as the test split).

    ``root``: the tiny-imagenet-200 folder (or its parent).  Classes are the wnids of wnids.txt in sorted order
    (the order of torchvision's ImageFolder, which SoTeacher's code uses), named by words.txt.  Val labels come from
    val/val_annotations.txt.  Training augmentation (``augment``), as SoTeacher's code: RandomRotation(20),
    RandomCrop(64, padding=4), RandomHorizontalFlip; images are resized first when ``image_size`` is not 64.
    Normalisation: mean (0.4802, 0.4481, 0.3975), std (0.2302, 0.2265, 0.2262).

    root: the tiny-imagenet-200 folder (or its parent)
    image_size: side the images are resized to (64: as stored)
    augment: SoTeacher's training augmentation (rotation, padded crop, flip)
    """
    _check_size("tinyimagenet", image_size)
    folder = _tiny_folder(root)
    listed = _read_lines(folder / "wnids.txt")
    if not listed:
        raise DataError(f"{folder / 'wnids.txt'} lists no classes")
    if len(set(listed)) != len(listed):
        raise DataError(f"{folder / 'wnids.txt'} lists a wnid twice")
    wnids = sorted(listed)
    class_index = {w: i for i, w in enumerate(wnids)}
    paths, targets = [], []
    for w in wnids:
        files = _class_images(folder / "train" / w / "images", w, "wnids.txt")
        paths += [f"train/{w}/images/{f}" for f in files]
        targets += [class_index[w]] * len(files)
    val_paths, val_targets = _tiny_val(folder, class_index)
    train_tf, eval_tf = tinyimagenet_transforms(image_size, augment)
    mean, std = TINYIMAGENET_STATS
    return DataBundle(
        name="tinyimagenet", train=_split(folder, paths, targets, train_tf),
        test=_split(folder, val_paths, val_targets, eval_tf), num_classes=len(wnids),
        input_shape=(3, image_size, image_size), class_names=_tiny_names(folder, wnids),
        prepare=Normalize(mean, std), meta={"root": str(folder), "wnids": wnids, "mean": mean, "std": std})


@register_dataset("imagenet", input_shape="3x224x224 (image_size)", classes="1000 (class folders)")
def imagenet(root: str = "data/imagenet", image_size: ImageSize = 224,
             crop_fraction: Annotated[float, Field(gt=0, le=1)] = 0.875, augment: bool = True) -> DataBundle:
    """ImageNet (ILSVRC-2012) in the ImageFolder layout root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG.

    Classes are the train class folders in sorted order, named by their folder; each val folder must be one of
    them.  The standard PyTorch recipe (pytorch/examples imagenet): RandomResizedCrop(224) + RandomHorizontalFlip
    for training, Resize(256) + CenterCrop(224) for evaluation (256 = ``image_size`` / ``crop_fraction``).
    Normalisation: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).

    root: the folder holding train/ and val/ (one folder per class in each)
    image_size: side of the crops the model sees
    crop_fraction: evaluation: the centre crop's share of the resized image (0.875: resize 256, crop 224)
    augment: RandomResizedCrop + horizontal flip of the training images (false: the evaluation transform)
    """
    _check_size("imagenet", image_size)
    if not 0 < crop_fraction <= 1:
        raise ConfigError(f"imagenet: crop_fraction must be in (0, 1], got {crop_fraction}")
    folder = Path(root).expanduser()
    for part in ("train", "val"):
        if not (folder / part).is_dir():
            raise DataError(f"data.root: {folder / part} not found; expected ImageNet in the ImageFolder layout "
                            "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (get ILSVRC-2012 from https://image-net.org "
                            "and move the val images into one folder per class)")
    wnids = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    if not wnids:
        raise DataError(f"data.root: {folder / 'train'} holds no class folders")
    class_index = {w: i for i, w in enumerate(wnids)}
    splits = {}
    for part in ("train", "val"):
        classes = wnids if part == "train" else sorted(p.name for p in (folder / part).iterdir() if p.is_dir())
        unknown = [w for w in classes if w not in class_index]
        if unknown:
            raise DataError(f"data.root: {folder / part / unknown[0]} is not a class of {folder / 'train'}")
        paths, targets = [], []
        for w in classes:
            files = _class_images(folder / part / w, w, f"{folder / part}")
            paths += [f"{part}/{w}/{f}" for f in files]
            targets += [class_index[w]] * len(files)
        if not paths:
            raise DataError(f"data.root: {folder / part} holds no class folders")
        splits[part] = (paths, targets)
    train_tf, eval_tf = imagenet_transforms(image_size, crop_fraction, augment)
    mean, std = IMAGENET_STATS
    return DataBundle(
        name="imagenet", train=_split(folder, *splits["train"], train_tf), test=_split(folder, *splits["val"], eval_tf),
        num_classes=len(wnids), input_shape=(3, image_size, image_size), class_names=wnids,
        prepare=Normalize(mean, std), meta={"root": str(folder), "mean": mean, "std": std})
