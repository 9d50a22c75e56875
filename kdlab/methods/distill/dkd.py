"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang, CVPR 2022, "Decoupled Knowledge Distillation").

The KD loss splits into a target-class part and a non-target part (paper Eq. 1-7).  With p = softmax(z / T),
b = (p_gt, 1 - p_gt) the binary target/non-target probabilities and p^ = softmax over the non-target classes::

    TCKD = T^2 * KL(b_teacher || b_student)
    NCKD = T^2 * KL(p^_teacher || p^_student)
    DKD  = tckd_weight * TCKD + nckd_weight * NCKD        (KD itself is TCKD + (1 - p_gt^teacher) * NCKD)

both KLs averaged over the batch.  The student loss is ``gamma * CE + beta * warm(epoch) * DKD`` (no separate KD
term: ``alpha`` defaults to 0), with the reference's linear warm-up ``warm = min(epoch / warmup, 1)`` over its
1-based epochs, i.e. ``min((e + 1) / warmup, 1)`` for kdlab's 0-based epoch e (``warmup: 0`` disables it).

Defaults are the CIFAR-100 defaults of the reference code (megvii-research/mdistiller, ``DKD`` config):
tckd_weight (the paper's alpha) 1, nckd_weight (beta) 8, T 4, CE weight 1, warm-up 20 epochs.  The paper and code
tune beta per pair (e.g. the reference's wrn_40_2 -> wrn_16_2 config uses 6); set ``nckd_weight`` accordingly.
DKD is not in SoTeacher's table of halved feature-loss weights, so both beta presets are 1.

Differences from the reference code: the code computes log(b_student) as the log of summed probabilities and
masks the target class by subtracting 1000 from its logit; kdlab takes the same quantities from log-sum-exps over
the target and non-target logits, which is equal in value and does not underflow for confident students.

With ``logit_standardise`` the terms are those of the z-scored logits (Sun et al. 2024's DKD: their CIFAR runs
multiply tckd_weight and nckd_weight by their KD weight, e.g. 9 and 72 for resnet32x4 -> resnet8x4, at T 2).

Logits only: works for any pair of architectures and any input kind, 1D sequences included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import Distiller, DistillerParams, standardise_logits

__all__ = ["DKD", "dkd_terms"]


def _binary_log_probs(z: Tensor, gt: Tensor) -> Tensor:
    """log (p_gt, 1 - p_gt) of softmax(z), (B, 2), computed stably."""
    total = torch.logsumexp(z, dim=1)
    target = z.gather(1, gt.unsqueeze(1)).squeeze(1)
    rest = torch.logsumexp(z.masked_fill(F.one_hot(gt, z.shape[1]).bool(), float("-inf")), dim=1)
    return torch.stack([target - total, rest - total], dim=1)


def _non_target(z: Tensor, gt: Tensor) -> Tensor:
    keep = ~F.one_hot(gt, z.shape[1]).bool()
    return z[keep].view(z.shape[0], z.shape[1] - 1)


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float = 4.0
              ) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD), each T^2 * KL(teacher || student) averaged over the batch (DKD Eq. 7)."""
    t = temperature
    s, te = student_logits.float() / t, teacher_logits.float() / t
    b_s, b_t = _binary_log_probs(s, target), _binary_log_probs(te, target)
    tckd = F.kl_div(b_s, b_t, reduction="batchmean", log_target=True) * t * t
    n_s = F.log_softmax(_non_target(s, target), dim=1)
    n_t = F.log_softmax(_non_target(te, target), dim=1)
    nckd = F.kl_div(n_s, n_t, reduction="batchmean", log_target=True) * t * t
    return tckd, nckd


class DKDParams(DistillerParams):
    alpha: float = Field(0.0, ge=0, description="weight of an extra plain KD term (DKD replaces KD)")
    tckd_weight: float = Field(1.0, ge=0, description="weight of TCKD (the paper's alpha)")
    nckd_weight: float = Field(8.0, ge=0, description="weight of NCKD (the paper's beta)")
    warmup: int = Field(20, ge=0, description="epochs of linear warm-up of the DKD weight (0: none)")

    def ineffective(self, epochs: int) -> list[str]:
        out = super().ineffective(epochs)
        if self.warmup > epochs > 0:
            out.append(f"warmup {self.warmup} > train.epochs {epochs}: the DKD terms reach only {epochs}/"
                       f"{self.warmup} of their weight by the last epoch")
        return out


@register_distill_method("dkd", needs_teacher=True, paper="Zhao et al. 2022")
class DKD(Distiller):
    """DKD: CE + warm-up * (tckd_weight * TCKD + nckd_weight * NCKD)."""

    Params = DKDParams
    BETA = {"standard": 1.0, "soteacher": 1.0}
    needs_features = False

    def __init__(self, params: DKDParams, ctx: DistillContext):
        super().__init__(params, ctx)
        self.tckd_weight, self.nckd_weight, self.warmup = params.tckd_weight, params.nckd_weight, params.warmup

    def warm(self, epoch: int) -> float:
        return 1.0 if self.warmup == 0 else min((epoch + 1) / self.warmup, 1.0)

    def method_loss(self, s, t, batch, state) -> dict[str, Tensor]:
        if self.standardise:  # logit standardisation's DKD: the DKD terms of the z-scored logits
            s, t = standardise_logits(s), standardise_logits(t)
        tckd, nckd = dkd_terms(s, t, batch.y, self.T)
        w = self.warm(state.epoch if state is not None else 0)
        return {"tckd": w * self.tckd_weight * tckd, "nckd": w * self.nckd_weight * nckd}
