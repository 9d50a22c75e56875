"""FitNets: hints for thin deep nets (Romero, Ballas, Kahou, Chassang, Gatta & Bengio, ICLR 2015).

The student's guided layer, mapped by a trainable regressor r, regresses the teacher's hint layer:

    L_HT = 1/2 || u_h(x) - r(v_g(x)) ||^2                                         (paper, Eq. 3)

Paper vs. the CRD-benchmark code (RepDistiller ``HintLoss`` + ``ConvReg``), whose behaviour is the default:

* the paper trains in two stages: first the student up to the guided layer and the regressor on L_HT alone, then
  the whole student with KD; the code trains the hint loss jointly with CE (+ KD) from the start.  Set
  ``init_epochs > 0`` for the paper's first stage (kdlab then still adds beta * L_HT during distillation; set
  ``beta: 0`` to drop it as the paper does);
* the code's loss is the mean squared error (mean over all elements), the paper's half the summed squared error;
  they differ by a constant per configuration, absorbed by beta;
* the regressor is the code's: a convolution chosen from the two maps' sizes, BN and ReLU
  (:class:`~kdlab.methods.distill._feature_tools.Regressor`).

Features: ``hint_layer`` indexes ``[stem, stage1, ..., stageN, embedding]`` of each network, the reference code's
feature list (default 2: the middle stage of the 3-stage CIFAR networks).  Heterogeneous pairs: the regressor
maps channels and spatial size; the two hints must have the same rank (both maps of the same kind, or both
vectors).  Works on 1D sequences (Conv1d regressor) and MLPs (Linear regressor); for a pair of different kinds
(e.g. a CNN and an MLP) use the embedding, ``hint_layer = -1``.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.errors import ConfigError
from kdlab.core.registry import register_distill_method, unbounded
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import Regressor, describe, require_shapes, run_init_stage
from kdlab.methods.distiller import Distiller, DistillerParams
from kdlab.models.contract import Features

__all__ = ["FitNet", "hint_loss"]


def hint_loss(regressed: Tensor, hint: Tensor) -> Tensor:
    """Mean squared error between the regressed student feature and the teacher's hint (the code's form)."""
    return F.mse_loss(regressed, hint)


def _pick(f: Features, layer: int) -> Tensor:
    return [*f.stages, f.embedding][layer]


@register_distill_method("fitnet", needs_teacher=True, paper="Romero et al. 2015",
                         own_teacher_passes="hint stage, when init_epochs > 0")
class FitNet(Distiller):
    """FitNets: the regressed student guided layer matches the teacher's hint layer (MSE)."""

    class Params(DistillerParams):
        hint_layer: int = Field(2, description="index into [stem, stage1..N, embedding] of both networks",
                                json_schema_extra=unbounded("a list index: negative ones count from the end; the "
                                                            "networks' lengths are checked when it is built"))
        init_epochs: int = Field(0, ge=0, description="paper's first stage: epochs of hint-only training "
                                                      "(0: the reference code's joint training)")
        init_lr: float = Field(0.05, gt=0, description="SGD learning rate of the hint stage")

    BETA = {"standard": 100.0, "soteacher": 50.0}

    PROTOCOLS = {"crd": "alone", "sftn": "with_kd", "soteacher": "with_kd"}

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        hint_layer, init_epochs, init_lr = params.hint_layer, params.init_epochs, params.init_lr
        require_shapes("fitnet", self)
        s_list = [*self.student_shapes, (self.student_dim,)]
        t_list = [*self.teacher_shapes, (self.teacher_dim,)]
        for name, lst in (("student", s_list), ("teacher", t_list)):
            if not -len(lst) <= hint_layer < len(lst):
                raise ConfigError(f"fitnet: hint_layer {hint_layer} is out of range for the {name}, whose feature "
                                  f"list [stem, stages..., embedding] has {len(lst)} entries")
        s_hint, t_hint = s_list[hint_layer], t_list[hint_layer]
        if len(s_hint) != len(t_hint):
            raise ConfigError(f"fitnet: hint_layer {hint_layer} gives features of different ranks, student "
                              f"{describe(s_hint)} and teacher {describe(t_hint)}; use hint_layer: -1 (the "
                              "embeddings) for networks of different kinds")
        self.hint_layer, self.init_epochs, self.init_lr = hint_layer, init_epochs, init_lr
        self.regressor = Regressor("fitnet", s_hint, t_hint, relu=True)
        self.init_history: list[float] = []

    def hint(self, s: Features, t: Features) -> Tensor:
        return hint_loss(self.regressor(_pick(s, self.hint_layer)), _pick(t, self.hint_layer))

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        return self.hint(s, t)

    def initialize(self, model: nn.Module, state) -> None:
        self.init_history = run_init_stage(
            "fitnet", self.teacher, model, state, self.hint, [*model.stages.parameters(), *self.regressor.parameters()],
            self.init_epochs, self.init_lr, trainables=[self.regressor])
