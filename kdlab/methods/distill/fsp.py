"""Flow of solution procedure (Yim, Joo, Bae & Kim, CVPR 2017, "A Gift from Knowledge Distillation: Fast
Optimization, Network Minimization and Transfer Learning").

The FSP matrix of two feature maps F1 (h x w x m) and F2 (h x w x n) of one network is their Gram matrix over
positions, G_{i,j} = sum_{s,t} F1_{s,t,i} F2_{s,t,j} / (h w); the student matches the teacher's FSP matrices
between the input and output of each section:

    L_FSP = 1/N sum_x sum_i lambda_i || G_T^i(x) - G_S^i(x) ||_F^2 ,  lambda_i equal    (paper, Eq. 2)

FSP is an initialisation method: the student is first trained on L_FSP alone for ``init_epochs`` (30, SGD at
``init_lr`` 0.05, momentum 0.9, weight decay 5e-4), then on the main task with CE (+ KD).

Paper vs. code (CRD benchmark ``FSP`` + ``helper/pretrain.py``), default ``mode="code"``: the code pairs
consecutive entries of the feature list (stem -> stage1 -> ... -> stageN: each stage's input and output, as the
paper's sections) and averages the squared differences over matrix entries and batch; ``mode="paper"`` sums
over the entries (so larger matrices weigh more) and averages over the batch.  Pairs of maps of different
spatial size are average-pooled to the smaller size first.  After the initialisation stage the reference code
adds no FSP term (the published beta of 50 is multiplied by 0); ``joint=True`` also adds beta * L_FSP during
distillation.  The seeds publish no SoTeacher beta for FSP; the preset halves the standard one, as for the others.

Heterogeneous pairs: the reference raises unless student and teacher have the same channel counts.  kdlab maps
each student feature with a trainable 1x1 convolution (no bias) onto the teacher's channel count when they
differ (identity otherwise), trained in the initialisation stage with the student; the networks' stages are
paired from the deepest.  Works on 1D sequences (Conv1d); an MLP has no positions to sum over: ConfigError.
"""

from __future__ import annotations

from typing import Literal

import torch.nn as nn
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import (
    check_same_rank,
    pair_last,
    pool_pair,
    projection,
    require_shapes,
    run_init_stage,
)
from kdlab.methods.distiller import Distiller, DistillerParams
from kdlab.models.contract import Features

__all__ = ["FSP", "fsp_loss", "fsp_matrix"]


def fsp_matrix(a: Tensor, b: Tensor) -> Tensor:
    """(N, Ca, *S), (N, Cb, *S') -> (N, Ca, Cb): position-averaged products, maps pooled to the smaller size."""
    a, b = pool_pair(a, b)
    a, b = a.flatten(2), b.flatten(2)
    return a @ b.transpose(1, 2) / a.shape[2]


def fsp_loss(g_s: list[Tensor], g_t: list[Tensor], mode: str = "code") -> Tensor:
    """FSP loss over consecutive pairs of two feature lists with equal channel counts."""
    total = 0.0
    for i in range(len(g_s) - 1):
        diff = fsp_matrix(g_s[i], g_s[i + 1]) - fsp_matrix(g_t[i], g_t[i + 1]).detach()
        total = total + (diff.pow(2).mean() if mode == "code" else diff.pow(2).flatten(1).sum(1).mean())
    return total


@register_distill_method("fsp", needs_teacher=True, paper="Yim et al. 2017",
                         own_teacher_passes="initialisation stage")
class FSP(Distiller):
    """FSP matrices between consecutive stages, matched in an initialisation stage of the student."""

    class Params(DistillerParams):
        mode: Literal["code", "paper"] = Field("code", description="code: mean over matrix entries; paper: sum")
        init_epochs: int = Field(30, ge=0, description="epochs of the FSP initialisation stage")
        init_lr: float = Field(0.05, gt=0, description="SGD learning rate of the initialisation stage")
        joint: bool = Field(False, description="also add beta * L_FSP during distillation (the code adds nothing)")

    BETA = {"standard": 50.0, "soteacher": 25.0}

    PROTOCOLS = {"crd": "alone", "soteacher": "with_kd"}  # not among the methods SFTN ran

    def __init__(self, params: Params, ctx: DistillContext):
        mode, init_epochs, init_lr, joint = params.mode, params.init_epochs, params.init_lr, params.joint
        self.__dict__["joint"] = joint  # read by distills_features() while the base class decides on caching
        super().__init__(params, ctx)
        require_shapes("fsp", self)
        pairs = list(zip(*pair_last(self.student_shapes, self.teacher_shapes)))
        check_same_rank("fsp", pairs, spatial=True, what="stem and stage outputs")
        self.connectors = nn.ModuleList(nn.Identity() if s[0] == t[0] else projection(s[0], t[0], len(s) - 1)
                                        for s, t in pairs)
        self.mode, self.joint = mode, joint
        self.init_epochs, self.init_lr = init_epochs, init_lr
        self.init_history: list[float] = []
        if not joint:
            # distillation is plain CE + KD: skip the feature pass and the beta term
            self.beta, self.needs_features = 0.0, False

    def distills_features(self) -> bool:
        return self.joint  # the initialisation stage uses features; plain distillation only logits

    def fsp(self, s: Features, t: Features) -> Tensor:
        g_s, g_t = pair_last(s.stages, t.stages)
        return fsp_loss([c(f) for c, f in zip(self.connectors, g_s)], g_t, self.mode)

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        return self.fsp(s, t)

    def initialize(self, model: nn.Module, state) -> None:
        self.init_history = run_init_stage("fsp", self.teacher, model, state, self.fsp,
                                           [*model.stages.parameters(), *self.connectors.parameters()],
                                           self.init_epochs, self.init_lr, trainables=[self.connectors])
