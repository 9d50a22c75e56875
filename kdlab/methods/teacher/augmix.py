"""AugMix (Hendrycks et al. 2020) as a teacher regulariser (SoTeacher App. I: alpha = 1, k = 3 chains).

Each training image gets two AugMix views (torchvision's AugMix: ``mixture_width`` chains of random operations
of severity 3, mixed with Dirichlet(alpha) weights and with the original by a Beta(alpha, alpha) skip weight).
The loss is CE on the clean image + ``jsd_weight`` * the Jensen-Shannon divergence among the predictions on the
clean image and the two views (the AugMix paper's training objective; ``jsd_weight: 0`` trains on the clean image
with CE and skips the views).

kdlab batches are already normalised floats; each image is mapped to [0, 1] by its own min and max for the
operations (which assume pixel intensities) and mapped back, so the views keep the input's scale.  Images only;
the operations run image by image on the CPU or GPU, so this baseline is slower than the others.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.errors import ConfigError
from kdlab.core.registry import StrictParams, register_teacher_method
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.base import Objective, StepOutput
from kdlab.methods.context import TeacherContext


def augmix_views(x: Tensor, op: nn.Module) -> Tensor:
    lo = x.flatten(1).min(1).values.view(-1, *([1] * (x.dim() - 1)))
    hi = x.flatten(1).max(1).values.view(-1, *([1] * (x.dim() - 1)))
    unit = ((x - lo) / (hi - lo).clamp(min=1e-8)).clamp(0, 1)
    out = torch.stack([op(img) for img in unit])
    return out * (hi - lo) + lo


def jensen_shannon(*logits: Tensor) -> Tensor:
    """Mean over the distributions of KL(p_k || mixture), averaged over the batch."""
    probs = [F.softmax(z, dim=1) for z in logits]
    log_m = torch.clamp(torch.stack(probs).mean(0), 1e-7, 1).log()
    return sum(F.kl_div(log_m, p, reduction="batchmean") for p in probs) / len(probs)


@register_teacher_method("augmix", paper="Hendrycks et al. 2020")
class AugMix(Objective):
    """AugMix views + Jensen-Shannon consistency (images only)."""

    class Params(StrictParams):
        alpha: float = Field(1.0, gt=0, description="Dirichlet / Beta concentration of the chains' mixing weights")
        width: int = Field(3, ge=1, description="k: number of augmentation chains")
        severity: int = Field(3, ge=1, le=10, description="strength of each augmentation operation (1-10)")
        jsd_weight: float = Field(12.0, ge=0, description="weight of the Jensen-Shannon consistency term among "
                                  "the clean image and two views (0: cross-entropy on the clean image only)")

    def __init__(self, params: Params, ctx: TeacherContext):
        super().__init__()
        data = ctx.data
        alpha, width, severity, jsd_weight = params.alpha, params.width, params.severity, params.jsd_weight
        if data is not None and data.kind != "image":
            raise ConfigError(f"method: augmix needs images; {data.name} has inputs of shape {tuple(data.input_shape)}")
        from torchvision.transforms import v2

        self.op = v2.AugMix(severity=severity, mixture_width=width, alpha=alpha)
        self.jsd_weight = jsd_weight

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        if not self.jsd_weight:
            logits = model(augmix_views(batch.x, self.op))
            ce = F.cross_entropy(logits, batch.y)
            return StepOutput(ce, logits, {"ce": ce.detach()})
        views = torch.cat([batch.x, augmix_views(batch.x, self.op), augmix_views(batch.x, self.op)])
        clean, v1, v2_ = model(views).chunk(3)
        ce = F.cross_entropy(clean, batch.y)
        jsd = jensen_shannon(clean, v1, v2_)
        return StepOutput(ce + self.jsd_weight * jsd, clean, {"ce": ce.detach(), "jsd": jsd.detach()})
