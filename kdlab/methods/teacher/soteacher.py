"""SoTeacher: student-oriented teacher training (Dong, Liu & Shang, 2023, Toward Student-oriented Teacher Network
Training for Knowledge Distillation; Fig. 1 is from its first version, 2022).

Loss = CE(f(x), y) + lambda_CR(t) * L_CR + lambda_LR * L_LR, where L_LR is the Lipschitz regulariser and L_CR the
temporal-ensembling consistency regulariser (:mod:`kdlab.regularizers`).  Defaults: lambda_CR_max = 1, linear
schedule, lambda_LR = 1e-5 (CIFAR-100; the paper uses 1e-6 for Tiny-ImageNet), the released code's ``reference``
Lipschitz form, the released code's consistency average (``average: code``, the first epoch's prediction counted
twice; ``average: mean`` is the paper's plain running mean, see :mod:`kdlab.regularizers.consistency`).
``no_lr`` / ``no_cr`` are the ablations of the paper's tables.
"""

from __future__ import annotations

from typing import Literal

import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from kdlab.core.registry import StrictParams, register_teacher_method
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.base import Objective, StepOutput
from kdlab.methods.context import TeacherContext
from kdlab.regularizers import ConsistencyRegularizer, LipschitzRegularizer


@register_teacher_method("soteacher", paper="Dong et al. 2023 (SoTeacher)")
class SoTeacher(Objective):
    """SoTeacher: cross-entropy + Lipschitz regularisation + consistency regularisation (temporal ensembling)."""

    class Params(StrictParams):
        lambda_lr: float = Field(1e-5, ge=0, description="weight of the Lipschitz term (1e-6 for Tiny-ImageNet)")
        lambda_cr_max: float = Field(1.0, ge=0, description="maximum weight of the consistency term")
        schedule: Literal["linear", "cosine", "cyclic", "piecewise", "step"] = Field(
            "linear", description="how the consistency weight rises to lambda_cr_max over training")
        cr_start_epoch: int = Field(0, ge=0, description="first epoch with consistency weight (schedule: step)")
        lipschitz: Literal["reference", "exact"] = Field(
            "reference", description="reference: the released code's Lipschitz bound; exact: the induced 1-norm as "
            "the paper writes it")
        buffer: Literal["memory", "memmap"] = Field("memory", description="where the consistency buffer lives")
        average: Literal["code", "mean"] = Field(
            "code", description="consistency average: code (released code: first epoch counted twice) or mean "
                                "(the paper's plain running mean)")
        no_lr: bool = Field(False, description="ablation: drop the Lipschitz term")
        no_cr: bool = Field(False, description="ablation: drop the consistency term")

    needs_index = True

    def __init__(self, params: Params, ctx: TeacherContext):
        super().__init__()
        model, data, epochs, run_dir = ctx.model, ctx.data, ctx.epochs, ctx.run_dir
        lambda_lr, lambda_cr_max, schedule = params.lambda_lr, params.lambda_cr_max, params.schedule
        cr_start_epoch, lipschitz, buffer = params.cr_start_epoch, params.lipschitz, params.buffer
        average, no_lr, no_cr = params.average, params.no_lr, params.no_cr
        self.lambda_lr = 0.0 if no_lr else lambda_lr
        self.lipschitz = LipschitzRegularizer(model, lipschitz) if self.lambda_lr > 0 else None
        self.consistency = None
        if not no_cr and lambda_cr_max > 0:
            self.consistency = ConsistencyRegularizer(
                len(data.train), data.num_classes, epochs, lambda_cr_max, schedule, cr_start_epoch, buffer,
                folder=run_dir, rule=average)

    def on_epoch_start(self, model: nn.Module, state: LoopState) -> None:
        if self.consistency is not None:
            self.consistency.on_epoch_start(state.epoch)

    def on_epoch_end(self, model: nn.Module, state: LoopState) -> None:
        if self.consistency is not None:
            self.consistency.on_epoch_end(state.epoch)

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        logits = model(batch.x)
        ce = F.cross_entropy(logits, batch.y)
        loss, parts = ce, {"ce": ce.detach()}
        if self.lipschitz is not None:
            lr = self.lipschitz()
            loss = loss + self.lambda_lr * lr
            parts["lipschitz"] = lr.detach()
        if self.consistency is not None:
            cr = self.consistency(logits, batch.index, state.epoch)
            loss = loss + cr
            parts["consistency"] = cr.detach()
        return StepOutput(loss, logits, parts)
