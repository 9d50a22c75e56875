"""Label smoothing (Szegedy et al. 2016) as a teacher regulariser (SoTeacher App. I)."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from kdlab.core.registry import StrictParams, register_teacher_method
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.base import Objective, StepOutput
from kdlab.methods.context import TeacherContext


@register_teacher_method("label-smoothing", paper="Szegedy et al. 2016")
class LabelSmoothing(Objective):
    """Cross-entropy with targets (1 - eps) one-hot + eps / K."""

    class Params(StrictParams):
        epsilon: float = Field(0.1, ge=0, lt=1, description="probability mass spread uniformly over the classes")

    def __init__(self, params: Params, ctx: TeacherContext):
        super().__init__()
        self.epsilon = params.epsilon

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        logits = model(batch.x)
        loss = F.cross_entropy(logits, batch.y, label_smoothing=self.epsilon)
        return StepOutput(loss, logits, {"ce_smoothed": loss.detach()})
