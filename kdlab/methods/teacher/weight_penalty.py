"""Classic weight penalties as teacher regularisers (SoTeacher App. I, Table 7: l1 1e-5, l2 5e-4).

``l2`` adds (lambda / 2) * sum w^2 to the loss, which for SGD is the same update as ``optim.weight_decay =
lambda`` (the config refuses both at once: set ``optim.weight_decay: 0`` with ``l2``).  Both penalise every
weight tensor of convolutions and linear layers (biases and batch-norm parameters excluded, as is usual for
explicit penalties).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from kdlab.core.registry import StrictParams, register_teacher_method
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.base import Objective, StepOutput
from kdlab.methods.context import TeacherContext


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]


class _Penalty(Objective):
    ord: int = 1

    def __init__(self, params: StrictParams, ctx: TeacherContext):
        super().__init__()
        self.weight = params.weight
        self.__dict__["_params"] = _weights(ctx.model)

    def penalty(self) -> torch.Tensor:
        norms = torch.stack(torch._foreach_norm(self._params, self.ord))
        return norms.sum() if self.ord == 1 else 0.5 * norms.pow(2).sum()

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        logits = model(batch.x)
        ce = F.cross_entropy(logits, batch.y)
        pen = self.penalty()
        return StepOutput(ce + self.weight * pen, logits, {"ce": ce.detach(), f"l{self.ord}": pen.detach()})


@register_teacher_method("l1", paper="SoTeacher App. I (baseline)")
class L1Penalty(_Penalty):
    """Cross-entropy + lambda * sum |w| over convolution and linear weights."""

    class Params(StrictParams):
        weight: float = Field(1e-5, ge=0, description="lambda")

    ord = 1


@register_teacher_method("l2", paper="SoTeacher App. I (baseline)")
class L2Penalty(_Penalty):
    """Cross-entropy + (lambda / 2) * sum w^2 over convolution and linear weights (explicit weight decay)."""

    class Params(StrictParams):
        weight: float = Field(5e-4, ge=0, description="lambda")

    ord = 2

