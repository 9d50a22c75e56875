"""Relational knowledge distillation (Park, Kim, Lu & Cho, CVPR 2019).

The student matches relations between the embeddings of a batch rather than the embeddings themselves:

* distance-wise: psi_D(t_i, t_j) = ||t_i - t_j||_2 / mu, mu the mean distance over distinct pairs of the batch;
  L_D = sum_(i,j) huber(psi_D(s_i, s_j), psi_D(t_i, t_j))                          (paper, Eqs. 4-5)
* angle-wise: psi_A(t_i, t_j, t_k) = <e_ij, e_kj>, e_ij = (t_i - t_j) / ||t_i - t_j||_2 (the cosine of the angle
  at t_j);  L_A = sum_(i,j,k) huber(psi_A(s), psi_A(t))                             (paper, Eqs. 6-7)
* L_RKD = w_d * L_D + w_a * L_A with w_d = 25, w_a = 50, the CRD benchmark code's weights.

Paper vs. code (CRD benchmark ``RKDLoss``, after the authors' code): the code averages the Huber (smooth L1,
delta = 1) terms over all n^2 pairs and n^3 triplets (degenerate ones included, where both relations are 0)
instead of summing them: a constant factor per batch size, left to the weights; kdlab follows the code.

Features: the pooled embedding (``Features.embedding``, the reference's ``feat[-1]``).  Heterogeneous pairs need
no adapter (relations are n x n and n x n x n whatever the widths).  Works on 1D sequences and MLPs alike.

Several processes (torchrun): the relations span the global batch (``relations: global``, the default: the
features of every process gathered, gradients flowing back to each process, so the loss is one process's with
the same global batch); ``relations: process`` relates the samples of each process's part only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import Distiller, RelationalParams
from kdlab.models.contract import Features

__all__ = ["RKD", "angle_cosines", "pairwise_distances", "rkd_angle_loss", "rkd_distance_loss"]


def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """(n, d) -> (n, n) Euclidean distances, exactly 0 on the diagonal (and a finite gradient there)."""
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(eps).sqrt()
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return d.masked_fill(eye, 0.0)


def _normalised_distances(e: Tensor) -> Tensor:
    d = pairwise_distances(e)
    return d / d[d > 0].mean()


def rkd_distance_loss(s: Tensor, t: Tensor) -> Tensor:
    """Smooth-L1 between the mean-normalised pairwise distances of the two batches."""
    s, t = s.flatten(1), t.flatten(1).detach()
    return F.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t))


def angle_cosines(e: Tensor) -> Tensor:
    """(n, d) -> (n, n, n): entry [j, i, k] is the cosine of the angle at e_j between e_i and e_k."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # diff[j, i] = unit(e_i - e_j)
    return diff @ diff.transpose(1, 2)


def rkd_angle_loss(s: Tensor, t: Tensor) -> Tensor:
    """Smooth-L1 between the triplet angle cosines of the two batches."""
    s, t = s.flatten(1), t.flatten(1).detach()
    return F.smooth_l1_loss(angle_cosines(s), angle_cosines(t))


@register_distill_method("rkd", needs_teacher=True, paper="Park et al. 2019")
class RKD(Distiller):
    """Relational KD: distance- and angle-wise relations between the embeddings of a batch."""

    class Params(RelationalParams):
        distance_weight: float = Field(25.0, ge=0, description="w_d, weight of the distance term")
        angle_weight: float = Field(50.0, ge=0, description="w_a, weight of the angle term")

    BETA = {"standard": 1.0, "soteacher": 0.5}

    PROTOCOLS = {"crd": "alone", "sftn": "with_kd", "soteacher": "with_kd"}

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        self.distance_weight, self.angle_weight = params.distance_weight, params.angle_weight

    def method_loss(self, s: Features, t: Features, batch, state) -> dict[str, Tensor]:
        out = {}
        e_s, e_t = self.global_batch(s.embedding, t.embedding)
        if self.distance_weight:
            out["rkd_distance"] = self.distance_weight * rkd_distance_loss(e_s, e_t)
        if self.angle_weight:
            out["rkd_angle"] = self.angle_weight * rkd_angle_loss(e_s, e_t)
        return out
