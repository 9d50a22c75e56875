"""Knowledge Distillation via Collaborative Learning (Guo, Wang, Wu, Yu, Liang, Hu & Luo, CVPR 2020, "Online
Knowledge Distillation via Collaborative Learning"), KDCL-Naive.

The student and its peers are trained together; the soft target is an ensemble of their logits, and every member
minimises ``CE(z_k, y) + weight * T^2 KL(softmax(z_t / T) || softmax(z_k / T))`` with the ensemble z_t taken as a
constant.  ``ensemble: naive`` (default; the variant the SFTN paper compares with, Table 4) takes, for each
sample, the logits of the member with the lowest cross-entropy on that sample; ``ensemble: mean`` averages the
members' logits.  The paper's other ensembles (Linear, MinLogit, General: weights fitted on the training batch or
a validation set) are not implemented.

Defaults: T = 4 and weight = 1 (kdlab's KD temperature; there is no public reference code to take them from).
The paper feeds each member a differently augmented view of the image; kdlab feeds every member the same batch.
No pretrained teacher (``needs_teacher: false``); the run reports the student.  Works for any architectures and
any input kind, 1D sequences included.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.base import StepOutput
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._peers import PeerObjective, PeerParams
from kdlab.methods.distiller import kd_loss

__all__ = ["KDCL", "ensemble_logits"]


def ensemble_logits(logits: list[Tensor], y: Tensor, kind: str = "naive") -> Tensor:
    """naive: per sample, the logits of the member with the lowest cross-entropy; mean: the average logits."""
    stacked = torch.stack(logits)  # (K, B, C)
    if kind == "mean":
        return stacked.mean(0)
    ce = torch.stack([F.cross_entropy(z, y, reduction="none") for z in logits])  # (K, B)
    best = ce.argmin(0)
    return stacked.gather(0, best.view(1, -1, 1).expand(1, *stacked.shape[1:])).squeeze(0)


class KDCLParams(PeerParams):
    ensemble: Literal["naive", "mean"] = Field("naive", description="how the members' logits form the target")
    T: float = Field(4.0, gt=0, description="distillation temperature")
    weight: float = Field(1.0, ge=0, description="weight of the distillation term")


@register_distill_method("kdcl", needs_teacher=False, paper="Guo et al. 2020")
class KDCL(PeerObjective):
    """KDCL-Naive: every member distils from the per-sample best member's logits."""

    Params = KDCLParams

    def __init__(self, params: KDCLParams, ctx: DistillContext):
        super().__init__(params, ctx)
        self.ensemble, self.T, self.weight = params.ensemble, params.T, params.weight

    def forward(self, model: nn.Module, batch, state) -> StepOutput:
        logits = self.all_logits(model, batch.x)
        target = ensemble_logits([z.detach() for z in logits], batch.y, self.ensemble)
        ces = [F.cross_entropy(z, batch.y) for z in logits]
        kds = [kd_loss(z, target, self.T, self.standardise) for z in logits]
        loss = sum(ce + self.weight * kd for ce, kd in zip(ces, kds))
        parts = {"ce": ces[0].detach(), "kd": kds[0].detach(), "peer_ce": torch.stack(ces[1:]).mean().detach()}
        return StepOutput(loss, logits[0], parts)
