"""Batched augmentation on the training device: one call per batch instead of per-image Python work."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class CropFlip(NamedTuple):
    """Per-sample decisions of a random crop + flip: top/left offsets into the padded image, and flips."""

    top: Tensor
    left: Tensor
    flipped: Tensor | None


def crop_flip_params(batch: int, pad_h: int, pad_w: int, gen: torch.Generator, flip: bool = True,
                     device: torch.device | str = "cpu") -> CropFlip:
    """Offsets uniform over the (2*pad_h+1) x (2*pad_w+1) positions and flips with p=1/2, one per sample."""
    top = torch.randint(0, 2 * pad_h + 1, (batch,), device=device, generator=gen)
    left = torch.randint(0, 2 * pad_w + 1, (batch,), device=device, generator=gen)
    flipped = torch.rand(batch, device=device, generator=gen) < 0.5 if flip else None
    return CropFlip(top, left, flipped)


def apply_crop_flip(x: Tensor, params: CropFlip, pad_h: int, pad_w: int, fill: float = 0.0) -> Tensor:
    """Crop each image of ``x`` (B, C, H, W), padded with ``fill``, at its offsets; flip those marked flipped.

    This is torchvision's ``RandomCrop(size, padding)`` (constant padding) followed by ``RandomHorizontalFlip``,
    given the same decisions, done as two gathers over the whole batch.
    """
    b, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad_w, pad_w, pad_h, pad_h), value=fill)
    # two gathers (rows, then columns) rather than one over (row, col) pairs: ~1.6x faster on a CPU core
    rows = params.top[:, None] + torch.arange(h, device=dev)[None, :]
    xp = xp.gather(2, rows[:, None, :, None].expand(b, c, h, xp.shape[3]))
    cols = params.left[:, None] + torch.arange(w, device=dev)[None, :]
    if params.flipped is not None:
        cols = torch.where(params.flipped[:, None], cols.flip(1), cols)
    return xp.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_crop_flip(x: Tensor, gen: torch.Generator, pad: int = 4, flip: bool = True,
                     fill: float = 0.0) -> Tensor:
    """Random crop of the original size from the zero-padded batch, then horizontal flip with p=1/2.

    Each sample gets its own offsets, uniform over the (2*pad+1)^2 positions, like torchvision's
    ``RandomCrop(size, padding=pad)`` + ``RandomHorizontalFlip()`` applied image by image.
    Works for images (B, C, H, W) and sequences (B, C, L) (a shift along L, and a reversal for ``flip``), and on
    any dtype (uint8 pixels are cropped as they are, before normalisation, as torchvision pads the PIL image).
    """
    if x.dim() == 3:
        return random_crop_flip(x.unsqueeze(2), gen, pad, flip, fill).squeeze(2)
    pad_h = pad if x.shape[2] > 1 else 0
    params = crop_flip_params(x.shape[0], pad_h, pad, gen, flip, x.device)
    return apply_crop_flip(x, params, pad_h, pad, fill)


def make_crop_flip(pad: int, flip: bool):
    def augment(x: Tensor, gen: torch.Generator) -> Tensor:
        return random_crop_flip(x, gen, pad=pad, flip=flip)

    return augment
