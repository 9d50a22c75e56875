"""Variational information distillation (Ahn, Hu, Damianou, Lawrence & Dai, CVPR 2019).

VID maximises a variational lower bound of the mutual information between teacher and student features with a
Gaussian q(t | s) whose mean mu(s) is a small trainable regressor of the student feature and whose variance is
one trainable value per teacher channel, sigma_c^2 = softplus(alpha_c) + eps:

    -log q(t | s) = sum_c sum_{h,w} [ log sigma_c + (t_{c,h,w} - mu_{c,h,w}(s))^2 / (2 sigma_c^2) ] + const
                                                                                   (paper, Eq. 5)

Paper vs. code (CRD benchmark ``VIDLoss``, from the authors' code), default ``mode="code"``: the code averages
0.5 * ((t - mu)^2 / sigma^2 + log sigma^2) over batch, channels and positions; ``mode="paper"`` sums over
channels and positions and averages over the batch (this changes the relative weight of layers of different
sizes, not just the scale).  Both: regressor 1x1 conv -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv with as many
hidden channels as the teacher feature, initial variance ``init_var`` = 5, eps = 1e-5.

Features: the outputs of stages 1..N (``Features.stages[1:]``), paired from the deepest stage.  Heterogeneous
pairs: the regressor maps channels; maps of different spatial size are average-pooled to the smaller size.
Works on 1D sequences (Conv1d regressor) and MLPs (Linear regressor, one variance per unit); a pair of
different kinds (a CNN and an MLP) is a ConfigError.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import (
    Shape,
    check_same_rank,
    pair_last,
    pool_pair,
    projection,
    require_shapes,
    softplus_inverse,
)
from kdlab.methods.distiller import Distiller, DistillerParams
from kdlab.models.contract import Features

__all__ = ["VID", "VIDHead", "vid_nll"]


def vid_nll(mean: Tensor, target: Tensor, variance: Tensor, mode: str = "code") -> Tensor:
    """Gaussian negative log-likelihood (without the constant) of ``target`` under N(mean, variance);
    ``variance`` has one entry per channel (dim 1)."""
    var = variance.view(1, -1, *([1] * (target.dim() - 2)))
    nll = 0.5 * ((mean - target).pow(2) / var + var.log())
    if mode == "code":
        return nll.mean()
    return nll.flatten(1).sum(1).mean()


class VIDHead(nn.Module):
    """The variational distribution of one teacher feature given one student feature."""

    def __init__(self, s_shape: Shape, t_shape: Shape, init_var: float = 5.0, eps: float = 1e-5):
        super().__init__()
        rank, cs, ct = len(s_shape) - 1, s_shape[0], t_shape[0]
        self.regressor = nn.Sequential(projection(cs, ct, rank), nn.ReLU(), projection(ct, ct, rank), nn.ReLU(),
                                       projection(ct, ct, rank))
        self.log_scale = nn.Parameter(torch.full((ct,), softplus_inverse(init_var - eps)))
        self.eps = eps

    def variance(self) -> Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, f_s: Tensor, f_t: Tensor, mode: str = "code") -> Tensor:
        if f_s.dim() > 2:
            f_s, f_t = pool_pair(f_s, f_t)
        return vid_nll(self.regressor(f_s), f_t, self.variance(), mode)


@register_distill_method("vid", needs_teacher=True, paper="Ahn et al. 2019")
class VID(Distiller):
    """Variational information distillation at every stage: Gaussian likelihood of the teacher's features."""

    class Params(DistillerParams):
        init_var: float = Field(5.0, gt=0, description="initial variance of q(t|s)")
        eps: float = Field(1e-5, gt=0, description="variance floor")
        mode: Literal["code", "paper"] = Field("code", description="code: mean over elements; paper: sum over "
                                                                   "channels and positions, mean over the batch")

    BETA = {"standard": 1.0, "soteacher": 0.5}

    PROTOCOLS = {"crd": "alone", "sftn": "with_kd", "soteacher": "with_kd"}

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        init_var, eps, mode = params.init_var, params.eps, params.mode
        require_shapes("vid", self)
        pairs = list(zip(*pair_last(self.student_shapes[1:], self.teacher_shapes[1:])))
        check_same_rank("vid", pairs, spatial=False, what="stage outputs")
        self.mode = mode
        self.heads = nn.ModuleList(VIDHead(s, t, init_var, eps) for s, t in pairs)

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        g_s, g_t = pair_last(s.stages[1:], t.stages[1:])
        return sum(head(a, b, self.mode) for head, a, b in zip(self.heads, g_s, g_t))
