"""DIST (Huang, You, Wang, Qian & Xu, NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher").

Instead of matching the teacher's probabilities exactly (KL), the student matches their relations: with
Y_s = softmax(z_s / tau) and Y_t = softmax(z_t / tau) (B samples x C classes) and the Pearson correlation
rho(u, v) = <u - mean(u), v - mean(v)> / (||u - mean(u)|| ||v - mean(v)|| + 1e-8),

    inter = 1 - 1/B sum_i rho(Y_s[i, :], Y_t[i, :])        (each sample's class ranking; paper Eq. 6)
    intra = 1 - 1/C sum_j rho(Y_s[:, j], Y_t[:, j])        (each class's ranking of the batch; Eq. 8)
    DIST  = tau^2 * (inter_weight * inter + intra_weight * intra)

and the student loss is ``gamma * CE + beta * DIST`` (no KL term: ``alpha`` defaults to 0).  Defaults are those
of the authors' CIFAR-100 runs (hunto/DIST_KD @ 2418f18, its classification code hunto/image_classification_sota
@ d9662f7: ``lib/models/losses/dist_kd.py``, ``configs/strategies/distill/dist_cifar.yaml``): tau 4, both
weights 1, CE weight 1 and DIST weight 2 (``kd_loss_weight``).  The tau^2 factor is the code's; the paper writes
the loss without it and with the weights beta = gamma = 2 on the two terms for CIFAR, which the code's
``kd_loss_weight 2`` and tau^2 multiply.  The 1e-8 is added to the product of the two norms, as the code does
(torchdistill's DISTLoss uses ``F.cosine_similarity``, which clamps each norm instead: with tau 1 and small
batches, where a class's probabilities hardly vary over the batch, the two differ by several per cent).

The intra-class term relates the samples of a batch: under torchrun it spans the global batch (``relations:
global``, the rows of every process gathered, as one process computes it), or each process's part
(``relations: process``).  With ``logit_standardise`` the logits are z-scored per sample before the temperature.
Logits only: any pair of architectures and any input kind.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import Distiller, RelationalParams, standardise_logits

__all__ = ["DIST", "dist_terms", "pearson_rows"]

PEARSON_EPS = 1e-8


def pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of two (N, M) tensors, the 1e-8 added to the product of the norms."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + PEARSON_EPS)


def dist_terms(student_logits: Tensor, teacher_logits: Tensor, tau: float = 4.0) -> tuple[Tensor, Tensor]:
    """(inter, intra), each times tau^2: one minus the mean correlation over samples and over classes."""
    y_s = F.softmax(student_logits / tau, dim=1)
    y_t = F.softmax(teacher_logits / tau, dim=1)
    inter = 1 - pearson_rows(y_s, y_t).mean()
    intra = 1 - pearson_rows(y_s.t(), y_t.t()).mean()
    return tau * tau * inter, tau * tau * intra


class DISTParams(RelationalParams):
    alpha: float = Field(0.0, ge=0, description="weight of an extra KL (KD) term (DIST replaces it)")
    inter_weight: float = Field(1.0, ge=0, description="weight of the inter-class relation (the paper's beta)")
    intra_weight: float = Field(1.0, ge=0, description="weight of the intra-class relation (the paper's gamma)")


@register_distill_method("dist", needs_teacher=True, paper="Huang et al. 2022")
class DIST(Distiller):
    """DIST: CE + beta * tau^2 * (inter-class + intra-class Pearson relations of the predictions)."""

    Params = DISTParams
    # the authors' kd_loss_weight; DIST is not in SoTeacher's table of halved feature-loss weights
    BETA = {"standard": 2.0, "soteacher": 2.0}
    needs_features = False

    def __init__(self, params: DISTParams, ctx: DistillContext):
        super().__init__(params, ctx)
        self.inter_weight, self.intra_weight = params.inter_weight, params.intra_weight

    def method_loss(self, s: Tensor, t: Tensor, batch, state) -> dict[str, Tensor]:
        if self.standardise:
            s, t = standardise_logits(s), standardise_logits(t)
        inter, intra = dist_terms(*self.global_batch(s, t), self.T)
        return {"inter": self.inter_weight * inter, "intra": self.intra_weight * intra}
