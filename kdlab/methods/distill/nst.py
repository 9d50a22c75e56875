"""Neuron selectivity transfer (Huang & Wang 2017, "Like What You Like: Knowledge Distill via Neuron Selectivity
Transfer").

Each channel's spatial map, flattened and L2-normalised, is one sample of the distribution of neuron
selectivities; the student's distribution matches the teacher's in squared maximum mean discrepancy:

    MMD^2 = 1/C_T^2 sum_{i,i'} k(f_T^i, f_T^i') + 1/C_S^2 sum_{j,j'} k(f_S^j, f_S^j')
            - 2/(C_T C_S) sum_{i,j} k(f_T^i, f_S^j),       k(x, y) = (x^T y + c)^d     (paper, Eqs. 4-6)

with the polynomial kernel d = 2, c = 0 (one of the paper's kernels, and the code's).  Paper and code (CRD benchmark
``NSTLoss``) agree; the code averages MMD^2 over the batch and leaves the paper's lambda/2 to beta.  The teacher
term has no gradient; it is kept so the loss is the MMD^2 itself (0 for identical features).

Features: the outputs of stages 1..N (``Features.stages[1:]``), paired from the deepest stage.  Heterogeneous
pairs: the MMD compares sets of channel maps, so channel counts may differ; maps of different spatial size are
average-pooled to the smaller size.  Works on 1D sequences; an MLP has no spatial axis: ConfigError.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import check_same_rank, pair_last, pool_pair
from kdlab.methods.distiller import Distiller, DistillerParams
from kdlab.models.contract import Features

__all__ = ["NST", "nst_loss", "poly_kernel_mean"]


def poly_kernel_mean(a: Tensor, b: Tensor, degree: int = 2, c: float = 0.0) -> Tensor:
    """(N, Ca, P), (N, Cb, P) -> mean over the batch and all channel pairs of (a_i . b_j + c)^degree."""
    return (a @ b.transpose(1, 2) + c).pow(degree).mean()


def nst_loss(f_s: Tensor, f_t: Tensor, degree: int = 2, c: float = 0.0) -> Tensor:
    """Squared MMD between the student's and the teacher's normalised channel maps (polynomial kernel)."""
    f_s, f_t = pool_pair(f_s, f_t)
    a = F.normalize(f_s.flatten(2), dim=2)
    b = F.normalize(f_t.flatten(2).detach(), dim=2)
    return (poly_kernel_mean(b, b, degree, c) + poly_kernel_mean(a, a, degree, c)
            - 2 * poly_kernel_mean(a, b, degree, c))


@register_distill_method("nst", needs_teacher=True, paper="Huang & Wang 2017")
class NST(Distiller):
    """Neuron selectivity transfer: MMD between channel-map distributions of stages 1..N."""

    class Params(DistillerParams):
        degree: int = Field(2, ge=1, description="degree d of the polynomial kernel")
        c: float = Field(0.0, ge=0, description="offset c of the polynomial kernel")

    BETA = {"standard": 50.0, "soteacher": 25.0}

    PROTOCOLS = {"crd": "alone", "soteacher": "with_kd"}  # not among the methods SFTN ran

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        self.degree, self.c = params.degree, params.c
        if hasattr(self, "student_shapes"):
            check_same_rank("nst", zip(*pair_last(self.student_shapes[1:], self.teacher_shapes[1:])),
                            spatial=True, what="stage outputs")

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        g_s, g_t = pair_last(s.stages[1:], t.stages[1:])
        return sum(nst_loss(a, b, self.degree, self.c) for a, b in zip(g_s, g_t))
