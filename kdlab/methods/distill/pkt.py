"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018).

The embeddings of a batch define, through a kernel, conditional probabilities of one sample choosing another;
the student matches the teacher's by a KL divergence.  With the cosine kernel K(a, b) = (cos(a, b) + 1) / 2:

    p_{i|j} = K(t_i, t_j) / sum_{k != j} K(t_k, t_j)   (q_{i|j} likewise from the student)
    L_PKT = sum_i sum_{j != i} p_{j|i} log(p_{j|i} / q_{j|i})                      (paper, Eqs. 9-12)

Paper vs. code (CRD benchmark ``PKT``, from the author's code), default ``mode="code"``: the code keeps the
self-pairs (k = j, a kernel value of 1) in the normalisation and the divergence, and averages the n^2 terms
p log((p + eps)/(q + eps)) instead of summing them.  ``mode="paper"`` leaves the self-pairs out and sums.

Features: the pooled embedding (``Features.embedding``, the reference's ``feat[-1]``).  Heterogeneous pairs need
no adapter (the probabilities are n x n whatever the widths).  Works on 1D sequences and MLPs alike.

Several processes (torchrun): the relations span the global batch (``relations: global``, the default: the
features of every process gathered, gradients flowing back to each process, so the loss is one process's with
the same global batch); ``relations: process`` relates the samples of each process's part only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import Distiller, RelationalParams
from kdlab.models.contract import Features

__all__ = ["PKT", "cosine_affinities", "pkt_loss"]


def cosine_affinities(e: Tensor, eps: float = 1e-7, self_pairs: bool = True) -> Tensor:
    """(n, d) -> (n, n) row-normalised cosine-kernel affinities (rows: conditional distributions)."""
    e = e / (e.norm(dim=1, keepdim=True) + eps)
    k = (e @ e.t() + 1.0) / 2.0
    if not self_pairs:
        k = k.masked_fill(torch.eye(k.shape[0], dtype=torch.bool, device=k.device), 0.0)
    return k / k.sum(1, keepdim=True)


def pkt_loss(s: Tensor, t: Tensor, eps: float = 1e-7, mode: str = "code") -> Tensor:
    """KL divergence between the teacher's and the student's affinity distributions."""
    keep = mode == "code"
    p = cosine_affinities(t.flatten(1).detach(), eps, keep)
    q = cosine_affinities(s.flatten(1), eps, keep)
    kl = p * torch.log((p + eps) / (q + eps))
    return kl.mean() if keep else kl.sum()


@register_distill_method("pkt", needs_teacher=True, paper="Passalis & Tefas 2018")
class PKT(Distiller):
    """Probabilistic KT: match the cosine-affinity distributions of the batch's embeddings (KL)."""

    class Params(RelationalParams):
        eps: float = Field(1e-7, gt=0, description="numerical floor in the norms and the logarithm")
        mode: Literal["code", "paper"] = Field("code", description="code: self-pairs kept, mean over n^2; "
                                                                   "paper: self-pairs left out, sum")

    BETA = {"standard": 30000.0, "soteacher": 15000.0}

    PROTOCOLS = {"crd": "alone", "sftn": "with_kd", "soteacher": "with_kd"}

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        self.eps, self.mode = params.eps, params.mode

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        return pkt_loss(*self.global_batch(s.embedding, t.embedding), self.eps, self.mode)
