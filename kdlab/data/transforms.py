"""Normalisation statistics and the per-image transforms of the image data sets.

Pixels stay uint8 until they reach the training device: in-memory data sets (CIFAR) are augmented there as
uint8 batches, and the folder data sets' worker processes end their per-image transforms with ``PILToTensor``
(uint8) instead of ``ToTensor`` + ``Normalize`` (float), which moves a quarter of the bytes between processes
and to the device.  :class:`Normalize` then does ``ToTensor``'s division by 255 and ``Normalize`` on the whole
batch, with the same operations in the same order, so the model sees bit-identical inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Per-channel mean and std of the training pixels in [0, 1].
# CIFAR-10: statistics of the 50,000 training images (the often-copied std (0.2023, 0.1994, 0.2010) is not the
# pixel std; see kuangliu/pytorch-cifar issue 19).
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
# CIFAR-100: the values of the CRD benchmark code (RepDistiller) and SoTeacher's dataset/cifar100.py.
CIFAR100_STATS = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
# Tiny-ImageNet: SoTeacher's dataset/imagenet.py.
TINYIMAGENET_STATS = ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
# ImageNet: the standard PyTorch ImageNet example (pytorch/examples imagenet/main.py).
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class Normalize:
    """A ``DataBundle.prepare``: uint8 pixels (B, C, H, W) -> ``(x / 255 - mean) / std`` per channel, in float32.

    Equal, bit for bit, to torchvision's ``ToTensor()`` then ``Normalize(mean, std)`` applied image by image.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        self.mean, self.std = tuple(mean), tuple(std)
        self._on: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._on:
            shape = (1, len(self.mean), 1, 1)
            self._on[device] = (torch.tensor(self.mean, device=device).view(shape),
                                torch.tensor(self.std, device=device).view(shape))
        return self._on[device]

    def __call__(self, x: Tensor) -> Tensor:
        mean, std = self._stats(x.device)
        return x.float().div(255).sub_(mean).div_(std)  # div, not div_: .float() of a float input is the input

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def tinyimagenet_transforms(image_size: int = 64, augment: bool = True):
    """Per-image (train, eval) transforms for Tiny-ImageNet, as SoTeacher's dataset/imagenet.py trains it:
    ``RandomRotation(20)`` (nearest-neighbour, black corners), ``RandomCrop(64, padding=4)``,
    ``RandomHorizontalFlip()``; evaluation uses the image as it is.  For ``image_size`` other than 64 the image
    is first resized (e.g. 32 to train CIFAR-sized models), and the crop keeps its 4-pixel padding.
    """
    from torchvision import transforms as T

    resize = [T.Resize(image_size)] if image_size != 64 else []
    train = resize + ([T.RandomRotation(20), T.RandomCrop(image_size, padding=4), T.RandomHorizontalFlip()]
                      if augment else [])
    return T.Compose(train + [T.PILToTensor()]), T.Compose(resize + [T.PILToTensor()])


def imagenet_transforms(image_size: int = 224, crop_fraction: float = 0.875, augment: bool = True):
    """Per-image (train, eval) transforms of the standard PyTorch ImageNet recipe (pytorch/examples
    imagenet/main.py, also used by the CRD and SoTeacher code): ``RandomResizedCrop(224)`` (scale 0.08-1, aspect
    3/4-4/3, bilinear) + ``RandomHorizontalFlip()``; evaluation ``Resize(256)`` + ``CenterCrop(224)``, where
    256 = 224 / ``crop_fraction``.
    """
    from torchvision import transforms as T

    train = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()] if augment else [
        T.Resize(round(image_size / crop_fraction)), T.CenterCrop(image_size)]
    evaluation = [T.Resize(round(image_size / crop_fraction)), T.CenterCrop(image_size)]
    return T.Compose(train + [T.PILToTensor()]), T.Compose(evaluation + [T.PILToTensor()])
