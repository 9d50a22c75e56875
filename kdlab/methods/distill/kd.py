"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

Student loss = gamma * CE(s, y) + alpha * KD(s, t), with

    KD(s, t) = T^2 * KL(softmax(t / T) || softmax(s / T)),

the KL summed over classes and averaged over the batch ("batchmean").  The T^2 factor keeps the gradient scale of
the soft term independent of T (paper, Sec. 2).  Defaults follow the CRD benchmark code behind the seeds' tables
(T = 4, gamma = 0.1, alpha = 0.9); SoTeacher's own logit-only runs use gamma = alpha = 0.5.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ...data.base import Batch
from ...engine.state import LoopState
from ...registry import StrictParams, register_distill_method
from ..base import DistillObjective, StepOutput


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, mean over the batch."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


@register_distill_method("kd", needs_teacher=True, paper="Hinton et al. 2015")
class KD(DistillObjective):
    """Hinton KD: gamma * CE + alpha * T^2 * KL(teacher || student) at temperature T."""

    class Params(StrictParams):
        T: float = Field(4.0, gt=0, description="temperature")
        alpha: float = Field(0.9, ge=0, description="weight of the KD term")
        gamma: float = Field(0.1, ge=0, description="weight of the cross-entropy term")

    def __init__(self, teacher: nn.Module, T: float = 4.0, alpha: float = 0.9, gamma: float = 0.1):
        super().__init__(teacher)
        self.T, self.alpha, self.gamma = T, alpha, gamma

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        with torch.no_grad():
            t_logits = self.teacher(batch.x)
        s_logits = model(batch.x)
        ce = F.cross_entropy(s_logits, batch.y)
        kd = kd_loss(s_logits, t_logits, self.T)
        loss = self.gamma * ce + self.alpha * kd
        return StepOutput(loss, s_logits, {"ce": ce.detach(), "kd": kd.detach()})
