"""Curriculum temperature KD (Li, Li, Yang, Yang, Zhang & Cheng, AAAI 2023, "Curriculum Temperature for Knowledge
Distillation").

KD whose temperature is learned adversarially: a raw parameter p (one scalar, the "global" temperature) gives

    T = t_start + t_range * sigmoid(GRL(p, lambda_e))

and the student loss is ``gamma * CE + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` (batch mean, as
KD).  The gradient reversal layer GRL is the identity forward and multiplies the gradient by lambda_e backward;
lambda_e follows a cosine from 0 to -lambda_max over the first ``lambda_epochs`` epochs (the curriculum:
``lambda_e = -lambda_max * (1 - (cos(pi * min(e, E) / E) + 1) / 2)`` for the 1-based epoch e), so the student's
optimizer moves p up the distillation loss, ever more strongly, while it moves the student down.  p is trained by
the student's optimizer, weight decay included.

Defaults are those of the authors' code behind the CIFAR-100 tables (zhengli97/CTKD @ 7d52522:
``models/temp_global.py``, ``helper/loops.py``, ``train_student.py``, ``scripts/run_cifar_distill.sh``): p starts
at 1, t_start 1 and t_range 20 (so T starts at 15.62 and stays in (1, 21); the code's ``t_end`` is this range's
width, not an upper bound), lambda_max 1 over 10 epochs, CE weight 0.1 and KD weight 0.9 (as KD's; the script's
``--kd_T 4`` is not used once the temperature is learned).  The paper writes lambda rising from 0 to 1 and a
reversed gradient; the code passes the negative lambda to a layer that does not negate, the same update.  The
instance-wise variant (a temperature per sample from a module on the logits) is not in the released code (only
its loss in the README), so kdlab implements the global temperature only.

Logits only: any pair of architectures and any input kind; the learned temperature is logged as ``temperature``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.core.state import LoopState
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import Distiller, LogitParams

__all__ = ["CTKD", "curriculum_lambda", "gradient_reversal"]


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.scale * grad, None


def gradient_reversal(x: Tensor, scale: float) -> Tensor:
    """``x`` forward; its gradient multiplied by ``scale`` backward (CTKD passes a negative scale)."""
    return _GradientReversal.apply(x, scale)


def curriculum_lambda(epoch: int, lambda_max: float = 1.0, epochs: int = 10) -> float:
    """The gradient-reversal scale of 1-based ``epoch``: a cosine from 0 to -lambda_max over ``epochs`` epochs
    (the code's ``CosineDecay(max_value=0, min_value=-lambda_max, num_loops=epochs)``)."""
    if epochs <= 0:
        return -lambda_max
    progress = (math.cos(math.pi * min(epoch, epochs) / epochs) + 1) / 2
    return progress * lambda_max - lambda_max


class CTKDParams(LogitParams):
    t_start: float = Field(1.0, gt=0, description="the temperature's lower bound")
    t_range: float = Field(20.0, gt=0, description="the width of the temperature's range: T in (t_start, t_start "
                                                   "+ t_range) (the code's t_end)")
    init: float = Field(1.0, description="the raw temperature parameter's initial value (T = t_start + t_range * "
                                         "sigmoid(init) at the start: 15.62 with the defaults)")
    lambda_max: float = Field(1.0, ge=0, description="the gradient reversal's final scale")
    lambda_epochs: int = Field(10, ge=0, description="epochs of the cosine curriculum of the reversal's scale "
                                                     "(0: lambda_max from the start)")


@register_distill_method("ctkd", needs_teacher=True, paper="Li et al. 2023")
class CTKD(Distiller):
    """CTKD: KD at a temperature learned adversarially through gradient reversal, with a curriculum."""

    Params = CTKDParams
    needs_features = False
    PROTOCOLS = {"crd": "logit", "sftn": "logit", "soteacher": "logit"}

    def __init__(self, params: CTKDParams, ctx: DistillContext):
        super().__init__(params, ctx)
        self.t_start, self.t_range = params.t_start, params.t_range
        self.lambda_max, self.lambda_epochs = params.lambda_max, params.lambda_epochs
        self.raw_temperature = nn.Parameter(torch.full((1,), float(params.init)))
        self._last_temperature: Tensor | None = None

    def kd_temperature(self, state: LoopState | None) -> Tensor:
        epoch = 1 if state is None else state.epoch + 1  # the code counts epochs from 1
        scale = curriculum_lambda(epoch, self.lambda_max, self.lambda_epochs)
        t = self.t_start + self.t_range * torch.sigmoid(gradient_reversal(self.raw_temperature, scale))
        self._last_temperature = t.detach()[0]
        return t[0]  # a scalar: the loss stays one

    def forward(self, model: nn.Module, batch, state):
        out = super().forward(model, batch, state)
        if self._last_temperature is not None and "kd" in out.parts:
            out.parts["temperature"] = self._last_temperature
        return out
