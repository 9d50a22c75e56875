"""Batched augmentation on the training device: one call per batch instead of per-image Python work."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(x: Tensor, gen: torch.Generator, pad: int = 4, flip: bool = True,
                     fill: float = 0.0) -> Tensor:
    """Random crop of the original size from the zero-padded batch, then horizontal flip with p=1/2.

    Each sample gets its own offsets, uniform over the (2*pad+1)^2 positions, like torchvision's
    ``RandomCrop(size, padding=pad)`` + ``RandomHorizontalFlip()`` applied image by image.
    Works for images (B, C, H, W) and sequences (B, C, L) (a shift along L, and a reversal for ``flip``).
    """
    if x.dim() == 3:
        return random_crop_flip(x.unsqueeze(2), gen, pad, flip, fill).squeeze(2)
    b, c, h, w = x.shape
    dev = x.device
    pad_h = pad if h > 1 else 0
    xp = F.pad(x, (pad, pad, pad_h, pad_h), value=fill)
    oy = torch.randint(0, 2 * pad_h + 1, (b,), device=dev, generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=gen)
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]
    cols = ox[:, None] + torch.arange(w, device=dev)[None, :]
    if flip:
        flipped = torch.rand(b, device=dev, generator=gen) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def make_crop_flip(pad: int, flip: bool):
    def augment(x: Tensor, gen: torch.Generator) -> Tensor:
        return random_crop_flip(x, gen, pad=pad, flip=flip)

    return augment
