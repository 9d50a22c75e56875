"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

Student loss = gamma * CE(s, y) + alpha * KD(s, t), with

    KD(s, t) = T^2 * KL(softmax(t / T) || softmax(s / T)),

the KL summed over classes and averaged over the batch ("batchmean").  The T^2 factor keeps the gradient scale of
the soft term independent of T (paper, Sec. 2).  Defaults follow the CRD benchmark code behind the seeds' tables
(T = 4, gamma = 0.1, alpha = 0.9); SoTeacher's own logit-only runs use gamma = alpha = 0.5.
"""

from __future__ import annotations

import torch.nn as nn
from pydantic import Field

from ...registry import register_distill_method
from ..distiller import Distiller, DistillerParams, kd_loss

__all__ = ["KD", "kd_loss"]


@register_distill_method("kd", needs_teacher=True, paper="Hinton et al. 2015")
class KD(Distiller):
    """Hinton KD: gamma * CE + alpha * T^2 * KL(teacher ‖ student) at temperature T."""

    class Params(DistillerParams):
        alpha: float = Field(0.9, ge=0, description="weight of the KD term")
        gamma: float = Field(0.1, ge=0, description="weight of the cross-entropy term")

    needs_features = False

    def __init__(self, teacher: nn.Module, student: nn.Module | None = None, data=None, T: float = 4.0,
                 alpha: float = 0.9, gamma: float = 0.1, **kw):
        super().__init__(teacher, student, data, gamma=gamma, alpha=alpha, T=T, **kw)
