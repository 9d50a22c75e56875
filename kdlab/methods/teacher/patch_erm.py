"""SoTeacher §3's empirical risk of the patch-wise learner (Lemma 3.3)."""

from __future__ import annotations

import torch.nn as nn

from kdlab.core.errors import ConfigError
from kdlab.core.registry import StrictParams, register_teacher_method
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.base import Objective, StepOutput
from kdlab.methods.context import TeacherContext


@register_teacher_method("patch-erm", paper="SoTeacher §3 (Lemma 3.3)")
class PatchERM(Objective):
    """-1/M sum_m log softmax(w_C f_E(x_m))_y: the cross-entropy of the modified softmax, unnormalised over classes
    (the model ``patchwise`` only; its logits are the mean over patches of the per-patch log-probabilities).

    The minimiser fits each feature's prediction to the mean label of the inputs that contain it (Lemma 3.3),
    which Theorem 3.6 bounds; ``standard`` on the same model fits the normalised geometric mean instead."""

    def __init__(self, params: StrictParams, ctx: TeacherContext):
        super().__init__()
        model = ctx.model
        from kdlab.models.patchwise import PatchwiseNet

        if not isinstance(model, PatchwiseNet):
            raise ConfigError(f"method.name: 'patch-erm' trains the model 'patchwise' only (got "
                              f"{type(model).__name__}); use 'standard' for other models")

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        logits = model(batch.x)
        loss = -logits.gather(1, batch.y[:, None]).mean()
        return StepOutput(loss, logits, {"patch_nll": loss.detach()})
