"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

Student loss = gamma * CE(s, y) + alpha * KD(s, t), with

    KD(s, t) = T^2 * KL(softmax(t / T) || softmax(s / T)),

the KL summed over classes and averaged over the batch ("batchmean").  The T^2 factor keeps the gradient scale of
the soft term independent of T (paper, Sec. 2).  Defaults follow the CRD benchmark code behind the seeds' tables
(T = 4, gamma = 0.1, alpha = 0.9); SoTeacher's own logit-only runs use gamma = alpha = 0.5, the default with
``beta_preset: soteacher``.
"""

from __future__ import annotations

from kdlab.core.registry import register_distill_method
from kdlab.methods.distiller import Distiller, LogitParams, kd_loss

__all__ = ["KD", "kd_loss"]


@register_distill_method("kd", needs_teacher=True, paper="Hinton et al. 2015")
class KD(Distiller):
    """Hinton KD: gamma * CE + alpha * T^2 * KL(teacher ‖ student) at temperature T."""

    Params = LogitParams
    needs_features = False
    PROTOCOLS = {"crd": "logit", "sftn": "logit", "soteacher": "logit"}

    # gamma and alpha left open are filled in from beta_preset when the parameters are validated (LogitParams)
