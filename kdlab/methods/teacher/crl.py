"""Correctness Ranking Loss (CRL; Moon et al. 2020, "Confidence-Aware Learning for Deep Neural Networks") as a
teacher regulariser (SoTeacher App. I, eq. (26), lambda = 1).

loss = CE + lambda * mean over pairs (i, j) of max(0, -g(c_i, c_j) (p_i - p_j) + |c_i - c_j|), where p is the
maximum softmax probability, c(x) the fraction of previous epochs in which x was classified correctly, and
g = 1 if c_i > c_j, -1 if c_i < c_j.  Pairs are each sample and the next one in the batch (as the CRL code);
pairs with equal history (g undefined in eq. (26)) contribute nothing, as in the CRL code.  The correctness history
is a per-sample buffer (saved with checkpoints); an epoch's predictions count from the next epoch on.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.distributed import all_gather_cat
from kdlab.core.registry import StrictParams, register_teacher_method
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.base import Objective, StepOutput
from kdlab.methods.context import TeacherContext


def correctness_ranking_loss(confidence: Tensor, history: Tensor) -> Tensor:
    """Eq. (26) for the pairs (i, i+1 mod B): confidence p and correctness frequency c per sample."""
    p2, c2 = confidence.roll(-1), history.roll(-1)
    g = torch.sign(history - c2)
    loss = torch.clamp(-g * (confidence - p2) + (history - c2).abs(), min=0)
    return torch.where(g == 0, torch.zeros_like(loss), loss).mean()


@register_teacher_method("crl", paper="Moon et al. 2020")
class CRL(Objective):
    """Cross-entropy + correctness ranking loss with a per-sample correctness history."""

    class Params(StrictParams):
        weight: float = Field(1.0, ge=0, description="lambda")

    needs_index = True
    gathered_buffers = ("correct_before", "correct_now")

    def __init__(self, params: Params, ctx: TeacherContext):
        super().__init__()
        self.weight = params.weight
        n = len(ctx.data.train)
        self.register_buffer("correct_before", torch.zeros(n))  # correct predictions in finished epochs
        self.register_buffer("correct_now", torch.zeros(n))  # ... in the current epoch
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))

    def on_epoch_start(self, model: nn.Module, state: LoopState) -> None:
        self.correct_now.zero_()

    def on_epoch_end(self, model: nn.Module, state: LoopState) -> None:
        self.correct_before += self.correct_now
        self.epochs_done += 1

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        logits = model(batch.x)
        ce = F.cross_entropy(logits, batch.y)
        probs = F.softmax(logits, dim=1)
        conf = probs.max(1).values
        hist = self.correct_before[batch.index] / self.epochs_done.clamp(min=1)
        rank = correctness_ranking_loss(conf, hist)
        with torch.no_grad():  # every process keeps the history of all samples
            self.correct_now[all_gather_cat(batch.index)] = all_gather_cat((logits.argmax(1) == batch.y).float())
        return StepOutput(ce + self.weight * rank, logits, {"ce": ce.detach(), "crl": rank.detach()})
