"""Similarity-preserving distillation (Tung & Mori, ICCV 2019).

For a batch of b samples, the activations Q (b x everything-else) of a layer give the pairwise-similarity matrix
G = Q Q^T, each row L2-normalised; the student matches the teacher's:

    L_SP = 1/b^2 * sum_(l, l') || G~_T^(l) - G~_S^(l') ||_F^2                      (paper, Eqs. 2-4)

Paper and code (CRD benchmark's ``Similarity``, confirmed by the paper's author) compute the same quantity; the
code applies it to one pair of layers, the output of the last stage (``feat[-2]``), the default here.  ``layers``
lists the stage indices (into ``Features.stages``, the same index in both networks, negative from the end) for
the paper's sum over several pairs.

Heterogeneous pairs need no adapter: G is b x b whatever the channels, size or rank of the features.  Works on
1D sequences and MLPs alike (features are flattened per sample).

Several processes (torchrun): the relations span the global batch (``relations: global``, the default: the
features of every process gathered, gradients flowing back to each process, so the loss is one process's with
the same global batch); ``relations: process`` relates the samples of each process's part only.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.errors import ConfigError
from kdlab.core.registry import register_distill_method, unbounded
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import Distiller, RelationalParams
from kdlab.models.contract import Features

__all__ = ["SP", "similarity_matrix", "sp_loss"]


def similarity_matrix(f: Tensor) -> Tensor:
    """(N, ...) -> (N, N): row-L2-normalised Gram matrix of the flattened features."""
    q = f.flatten(1)
    return F.normalize(q @ q.t(), dim=1)


def sp_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Squared Frobenius distance of the two similarity matrices over b^2."""
    b = f_s.shape[0]
    return (similarity_matrix(f_t) - similarity_matrix(f_s)).pow(2).sum() / (b * b)


@register_distill_method("sp", needs_teacher=True, paper="Tung & Mori 2019")
class SP(Distiller):
    """Similarity-preserving KD: match the batch's pairwise-similarity matrices of the last stage."""

    class Params(RelationalParams):
        layers: list[int] = Field([-1], min_length=1, description="stage indices (both networks) to compare",
                                  json_schema_extra=unbounded("list indices: negative ones count from the end; the "
                                                              "networks' lengths are checked when it is built"))

    BETA = {"standard": 3000.0, "soteacher": 1500.0}

    PROTOCOLS = {"crd": "alone", "sftn": "with_kd", "soteacher": "with_kd"}

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        self.layers = list(params.layers)
        if hasattr(self, "student_shapes"):
            n = min(len(self.student_shapes), len(self.teacher_shapes))
            bad = [i for i in self.layers if not -n <= i < n]
            if bad:
                raise ConfigError(f"sp: layers {bad} out of range; the networks have {len(self.student_shapes)} "
                                  f"(student) and {len(self.teacher_shapes)} (teacher) stages including the stem")

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        return sum(sp_loss(*self.global_batch(s.stages[i], t.stages[i])) for i in self.layers)
