"""Correlation congruence (Peng, Jin, Liu, Li, Wu, Liu, Zhou & Zhang, ICCV 2019).

Paper: the correlation matrix psi(F) = [k(f_i, f_j)] of a batch of n embeddings, with a Gaussian RBF kernel
approximated by its P-order Taylor expansion (for unit-norm embeddings, ||f_i - f_j||^2 = 2 - 2 f_i.f_j):

    k(f_i, f_j) ~= sum_{p=0..P} exp(-2 gamma) (2 gamma)^p / p! (f_i . f_j)^p
    L_CC = 1/n^2 || psi(F_t) - psi(F_s) ||_2^2                                    (paper, Eqs. 6-9)

Code (CRD benchmark ``Correlation``, "code emailed by the original author"), the default ``mode="code"``: with
delta = |e_s - e_t| the element-wise absolute difference of the two embeddings,

    L = mean_i sum_d delta_{i,d} * delta_{i+1,d}

a product of neighbouring samples' absolute differences (it depends on the batch order), not a kernel
correlation.  ``mode="paper"`` computes the paper's loss with ``kernel_gamma`` (0.4) and ``order`` P (2); it
L2-normalises the embeddings first, since the expansion presumes unit norm (kdlab's reading of the paper;
torchdistill's ``CCKDLoss`` applies the expansion to the raw linear outputs).

Features: the pooled embedding (``Features.embedding``, the reference's ``feat[-1]``) of each network, mapped by
trainable linear embeddings (``embed_dim`` = 128, the code's ``feat_dim``) for both student and teacher, so any
pair of embedding widths works.  Works on 1D sequences and MLPs alike.

Several processes (torchrun): the relations span the global batch (``relations: global``, the default: the
features of every process gathered, gradients flowing back to each process, so the loss is one process's with
the same global batch); ``relations: process`` relates the samples of each process's part only.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import require_shapes
from kdlab.methods.distiller import Distiller, RelationalParams
from kdlab.models.contract import Features

__all__ = ["CC", "cc_loss", "taylor_rbf_correlation"]


def taylor_rbf_correlation(e: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    """(n, d) unit-norm embeddings -> (n, n) Taylor-approximated Gaussian-RBF kernel matrix."""
    sim = e @ e.t()
    out = sim.new_zeros(sim.shape)
    for p in range(order + 1):
        out = out + (2 * gamma) ** p / math.factorial(p) * sim.pow(p)
    return math.exp(-2 * gamma) * out


def cc_loss(e_s: Tensor, e_t: Tensor, mode: str = "code", gamma: float = 0.4, order: int = 2) -> Tensor:
    """Correlation-congruence loss of two (n, d) embeddings of the same width."""
    n = e_s.shape[0]
    if mode == "code":
        if n < 2:  # no neighbouring pair in the batch
            return e_s.sum() * 0.0
        delta = (e_s - e_t).abs()
        return (delta[:-1] * delta[1:]).sum(1).mean()
    k_s = taylor_rbf_correlation(F.normalize(e_s, dim=1), gamma, order)
    k_t = taylor_rbf_correlation(F.normalize(e_t, dim=1), gamma, order)
    return (k_t - k_s).pow(2).sum() / (n * n)


@register_distill_method("cc", needs_teacher=True, paper="Peng et al. 2019")
class CC(Distiller):
    """Correlation congruence on linear embeddings of both networks' pooled features."""

    class Params(RelationalParams):
        embed_dim: int = Field(128, ge=1, description="width of the trainable linear embeddings")
        mode: Literal["code", "paper"] = Field("code", description="code: neighbouring-difference product (CRD "
                                                                   "benchmark); paper: Taylor-RBF correlation")
        kernel_gamma: float = Field(0.4, gt=0, description="RBF kernel width gamma (paper mode)")
        order: int = Field(2, ge=0, description="Taylor order P (paper mode)")

    BETA = {"standard": 0.02, "soteacher": 0.01}

    PROTOCOLS = {"crd": "alone", "soteacher": "with_kd"}  # not among the methods SFTN ran

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        require_shapes("cc", self)
        self.mode, self.kernel_gamma, self.order = params.mode, params.kernel_gamma, params.order
        embed_dim = params.embed_dim
        self.embed_s = nn.Linear(self.student_dim, embed_dim)
        # trained with the student, as in the reference code: the teacher network itself stays frozen
        self.embed_t = nn.Linear(self.teacher_dim, embed_dim)

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        e_s, e_t = self.global_batch(self.embed_s(s.embedding), self.embed_t(t.embedding))
        return cc_loss(e_s, e_t, self.mode, self.kernel_gamma, self.order)
