"""Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018, "Deep Mutual Learning").

K networks (the student and ``num_peers`` peers) learn together; each minimises its cross-entropy plus the mean
KL divergence from every other network's prediction to its own (paper Eq. 10)::

    L_k = CE(p_k, y) + weight * 1/(K-1) * sum_{l != k} T^2 KL(p_l || p_k),    p = softmax(z / T)

with the other networks' predictions taken as constants.  Defaults: T = 1, weight = 1 (the paper's plain KL).
The paper updates the networks in turn within each step (network 2's loss uses network 1's prediction after
network 1's update); kdlab, like most re-implementations, computes every prediction once and updates all networks
in one optimizer step on the sum of their losses (with the targets detached, each network's gradient is that of
its own loss).

No pretrained teacher (``needs_teacher: false``); the run reports the student.  Works for any architectures
(``peer`` may differ from the student) and any input kind, 1D sequences included.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.base import StepOutput
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._peers import PeerObjective, PeerParams
from kdlab.methods.distiller import kd_loss

__all__ = ["DML", "mutual_losses"]


def mutual_losses(logits: list[Tensor], temperature: float = 1.0, standardise: bool = False) -> list[Tensor]:
    """For each network k: 1/(K-1) sum_{l != k} T^2 KL(softmax(z_l / T) || softmax(z_k / T)), targets detached
    (``standardise``: logits z-scored first, see :func:`kdlab.methods.distiller.standardise_logits`)."""
    out = []
    for k, zk in enumerate(logits):
        others = [kd_loss(zk, zl.detach(), temperature, standardise) for l_, zl in enumerate(logits) if l_ != k]
        out.append(torch.stack(others).mean())
    return out


class DMLParams(PeerParams):
    T: float = Field(1.0, gt=0, description="temperature of the mutual KL")
    weight: float = Field(1.0, ge=0, description="weight of the mutual KL")


@register_distill_method("dml", needs_teacher=False, paper="Zhang et al. 2018")
class DML(PeerObjective):
    """Deep mutual learning: the student and its peers each add the mean KL to the others' predictions."""

    Params = DMLParams

    def __init__(self, params: DMLParams, ctx: DistillContext):
        super().__init__(params, ctx)
        self.T, self.weight = params.T, params.weight

    def forward(self, model: nn.Module, batch, state) -> StepOutput:
        logits = self.all_logits(model, batch.x)
        ces = [nn.functional.cross_entropy(z, batch.y) for z in logits]
        kls = mutual_losses(logits, self.T, self.standardise)
        loss = sum(ce + self.weight * kl for ce, kl in zip(ces, kls))
        parts = {"ce": ces[0].detach(), "kl": kls[0].detach(),
                 "peer_ce": torch.stack(ces[1:]).mean().detach()}
        return StepOutput(loss, logits[0], parts)
