"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) as teacher regularisers (SoTeacher App. I, alpha 0.2).

Each batch is paired with a random permutation of itself; lambda ~ Beta(alpha, alpha).  Mixup trains on
lambda x + (1 - lambda) x' with loss lambda CE(y) + (1 - lambda) CE(y'); CutMix pastes a box of x' covering a
fraction 1 - lambda of the image (lambda is then recomputed from the clipped box, as in the CutMix code) and uses
the same mixed loss.  The randomness comes from torch's generator, which the loop seeds per epoch.
CutMix needs spatial inputs (images, or sequences where the 'box' is an interval).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.errors import ConfigError
from kdlab.core.registry import StrictParams, register_teacher_method
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.base import Objective, StepOutput
from kdlab.methods.context import TeacherContext


def _beta(alpha: float, device: torch.device) -> float:
    if alpha <= 0:
        return 1.0
    a = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(a, a).sample())


def mixup_batch(x: Tensor, lam: float, perm: Tensor) -> Tensor:
    return lam * x + (1 - lam) * x[perm]


def cutmix_batch(x: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, float]:
    """Paste a random box of the permuted batch; returns the mixed batch and the exact kept fraction."""
    sizes = x.shape[2:]
    cut = (1 - lam) ** (1 / len(sizes))
    lo, hi = [], []
    for s in sizes:
        c = int(torch.randint(0, s, (1,)))
        half = int(s * cut) // 2
        lo.append(max(c - half, 0))
        hi.append(min(c + half, s))
    out = x.clone()
    box = (slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(lo, hi))
    out[box] = x[perm][box]
    area = 1.0
    for a, b, s in zip(lo, hi, sizes):
        area *= (b - a) / s
    return out, 1.0 - area


class _Mixing(Objective):
    def __init__(self, params: StrictParams, ctx: TeacherContext):
        super().__init__()
        self.alpha = params.alpha

    def mix(self, x: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, float]:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        lam = _beta(self.alpha, batch.x.device)
        perm = torch.randperm(batch.x.shape[0], device=batch.x.device)
        x, lam = self.mix(batch.x, lam, perm)
        logits = model(x)
        loss = lam * F.cross_entropy(logits, batch.y) + (1 - lam) * F.cross_entropy(logits, batch.y[perm])
        return StepOutput(loss, logits, {"mixed_ce": loss.detach()})


@register_teacher_method("mixup", paper="Zhang et al. 2018")
class Mixup(_Mixing):
    """Mixup: train on convex combinations of random pairs, lambda ~ Beta(alpha, alpha)."""

    class Params(StrictParams):
        alpha: float = Field(0.2, ge=0, description="lambda ~ Beta(alpha, alpha) (0: no mixing)")

    def mix(self, x: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, float]:
        return mixup_batch(x, lam, perm), lam


@register_teacher_method("cutmix", paper="Yun et al. 2019")
class CutMix(_Mixing):
    """CutMix: paste a box from another sample; labels mixed by the box area, lambda ~ Beta(alpha, alpha)."""

    class Params(StrictParams):
        alpha: float = Field(0.2, ge=0, description="lambda ~ Beta(alpha, alpha) (0: no mixing)")

    def __init__(self, params: Params, ctx: TeacherContext):
        super().__init__(params, ctx)
        data = ctx.data
        if data is not None and len(data.input_shape) < 2:
            raise ConfigError(f"method: cutmix needs spatial inputs (images or sequences); {data.name} has inputs "
                              f"of shape {tuple(data.input_shape)}")

    def mix(self, x: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, float]:
        return cutmix_batch(x, lam, perm)
