"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

A spatial attention map of a feature map A (C channels) is Q = F(A) = sum_c |A_c|^p, flattened; the student
matches the teacher's L2-normalised maps at several layers j:

    L_AT = beta/2 * sum_j || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_p ,  p = 2      (paper, Eq. 2)

Paper vs. code: the authors' code (and the CRD benchmark's ``Attention``, the default ``mode="code"``) squares
the difference and averages it over batch and positions, ``mean((a_S - a_T)^2)``, with the map a channel mean
(the same map after normalisation).  ``mode="paper"`` takes the (unsquared) L2 norm of the difference per sample,
averaged over the batch (the beta/2 factor is left to beta).  ``p`` is the exponent in the map (2 in both).

Features: the outputs of stages 1..N (``Features.stages[1:]``, the reference's ``feat[1:-1]``), paired from the
deepest stage when the two networks have different depths.  Heterogeneous pairs: attention maps need no
channel match; maps of different spatial size are average-pooled to the smaller size before the maps are taken.
Works on 1D sequences (attention over positions); an MLP has no spatial axis: ConfigError.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import check_same_rank, pair_last, pool_pair
from kdlab.methods.distiller import Distiller, DistillerParams
from kdlab.models.contract import Features

__all__ = ["AT", "at_loss", "attention_map"]


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """(N, C, *S) -> (N, prod S): the channel mean of |f|^p, flattened and L2-normalised per sample."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


def at_loss(f_s: Tensor, f_t: Tensor, p: float = 2.0, mode: str = "code") -> Tensor:
    """Attention-transfer loss of one pair of maps (pooled to the smaller spatial size first)."""
    f_s, f_t = pool_pair(f_s, f_t)
    diff = attention_map(f_s, p) - attention_map(f_t, p)
    if mode == "code":
        return diff.pow(2).mean()
    return diff.norm(dim=1).mean()


@register_distill_method("at", needs_teacher=True, paper="Zagoruyko & Komodakis 2017")
class AT(Distiller):
    """Attention transfer: match the normalised spatial attention maps of stages 1..N."""

    class Params(DistillerParams):
        p: float = Field(2.0, gt=0, description="exponent of |A| in the attention map")
        mode: Literal["code", "paper"] = Field("code", description="code: mean squared difference (CRD "
                                                                   "benchmark); paper: L2 norm of the difference")

    BETA = {"standard": 1000.0, "soteacher": 500.0}

    PROTOCOLS = {"crd": "alone", "sftn": "with_kd", "soteacher": "with_kd"}

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        self.p, self.mode = params.p, params.mode
        if hasattr(self, "student_shapes"):
            check_same_rank("at", zip(*pair_last(self.student_shapes[1:], self.teacher_shapes[1:])),
                            spatial=True, what="stage outputs")

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        g_s, g_t = pair_last(s.stages[1:], t.stages[1:])
        return sum(at_loss(a, b, self.p, self.mode) for a, b in zip(g_s, g_t))
