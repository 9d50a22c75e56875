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
reversed gradient; the code passes the negative lambda to a layer that does not negate, the same update.

``variant: instance`` learns a temperature per sample, T_i = t_start + t_range * sigmoid(GRL(m(z_s, z_t)_i)),
with the README's loss (the repository's only released piece of this variant)::

    L = 1/B sum_i T_i^2 sum_c p_ic (log p_ic - log softmax(z_s,i / T_i)_c),   p_i = softmax(z_t,i / T_i) + 1e-7

The module m itself is not in the repository (the README links its code on a cloud drive); the paper describes a
small MLP on the two networks' predictions.  kdlab's m is its own choice (the parameters' descriptions, which
``kdlab list distill-methods ctkd`` prints, say so): Linear(2C, ``instance_hidden``) - ReLU - Linear(., 1) on the
concatenated logits (the student's detached, so the student is not trained to move its own temperature), its last
layer zero with bias ``init``: every sample starts at the global variant's temperature.

Logits only: any pair of architectures and any input kind; the learned temperature is logged as ``temperature``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.errors import ConfigError
from kdlab.core.registry import register_distill_method, unbounded
from kdlab.core.state import LoopState
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import Distiller, LogitParams, kd_loss, standardise_logits

__all__ = ["CTKD", "curriculum_lambda", "gradient_reversal", "instance_kd_loss"]

README_EPS = 1e-7


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


def instance_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperatures: Tensor) -> Tensor:
    """KD with a temperature per sample, as the CTKD README writes it (1e-7 added to the teacher's probabilities,
    each sample's KL times its T^2, the mean over the batch)."""
    t = temperatures.unsqueeze(1)
    log_q = F.log_softmax(student_logits / t, dim=1)
    p = F.softmax(teacher_logits / t, dim=1) + README_EPS
    return (temperatures.pow(2) * (p * (p.log() - log_q)).sum(dim=1)).mean()


class InstanceTemperature(nn.Module):
    """The raw per-sample temperature from the concatenated logits (kdlab's module; see the module docstring)."""

    def __init__(self, num_classes: int, hidden: int, init: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * num_classes, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.constant_(self.net[2].bias, init)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return self.net(torch.cat([student_logits.detach(), teacher_logits], dim=1)).squeeze(1)


class CTKDParams(LogitParams):
    t_start: float = Field(1.0, gt=0, description="the temperature's lower bound")
    t_range: float = Field(20.0, gt=0, description="the width of the temperature's range: T in (t_start, t_start "
                                                   "+ t_range) (the code's t_end)")
    init: float = Field(1.0, description="the raw temperature parameter's initial value (T = t_start + t_range * "
                                         "sigmoid(init) at the start: 15.62 with the defaults)",
                        json_schema_extra=unbounded("a raw value before the sigmoid: every real number maps into "
                                                    "the temperature's range"))
    lambda_max: float = Field(1.0, ge=0, description="the gradient reversal's final scale")
    lambda_epochs: int = Field(10, ge=0, description="epochs of the cosine curriculum of the reversal's scale "
                                                     "(0: lambda_max from the start)")
    variant: Literal["global", "instance"] = Field(
        "global", description="global: one learned temperature (the released code); instance: one per sample "
                              "from a small MLP on both networks' logits (kdlab's module, the README's loss)")
    instance_hidden: int = Field(64, gt=0, description="variant instance: the temperature MLP's hidden width")


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
        self.variant = params.variant
        if self.variant == "instance":
            if ctx.data is None:
                raise ConfigError("ctkd: variant instance needs the data set (its temperature module reads the "
                                  "class count)")
            self.instance = InstanceTemperature(ctx.data.num_classes, params.instance_hidden, params.init)
        else:
            self.raw_temperature = nn.Parameter(torch.full((1,), float(params.init)))
        self._last_temperature: Tensor | None = None

    def temperature(self, state: LoopState | None, s_logits: Tensor | None = None,
                    t_logits: Tensor | None = None) -> Tensor:
        """The learned temperature: a scalar (global) or one per sample (instance, from the logits)."""
        epoch = 1 if state is None else state.epoch + 1  # the code counts epochs from 1
        scale = curriculum_lambda(epoch, self.lambda_max, self.lambda_epochs)
        raw = self.instance(s_logits, t_logits) if self.variant == "instance" else self.raw_temperature[0]
        t = self.t_start + self.t_range * torch.sigmoid(gradient_reversal(raw, scale))
        self._last_temperature = t.detach().mean()
        return t

    def kd_term(self, s_logits: Tensor, t_logits: Tensor, state: LoopState | None) -> Tensor:
        if self.standardise:
            s_logits, t_logits = standardise_logits(s_logits), standardise_logits(t_logits)
        t = self.temperature(state, s_logits, t_logits)
        return instance_kd_loss(s_logits, t_logits, t) if self.variant == "instance" else kd_loss(s_logits, t_logits, t)

    def forward(self, model: nn.Module, batch, state):
        out = super().forward(model, batch, state)
        if self._last_temperature is not None and "kd" in out.parts:
            out.parts["temperature"] = self._last_temperature  # instance: the batch's mean
        return out
