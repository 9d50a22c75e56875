"""The learner of SoTeacher's theory (§3.1): a feature extractor that processes each patch on its own, a 1x1
classification head and the modified softmax (a geometric mean over patches).

f_E is a P x P convolution with stride P (one embedding per patch) followed by 1x1 convolutions, so no layer
sees two patches; w_C is a 1x1 convolution to K class scores per patch.  The modified softmax of Def. B.1,
exp(mean_m h_m) / (prod_m sum_k exp h_mk)^(1/M), has the logarithm mean_m log_softmax(h_m): that is what the model
returns as its logits.  A softmax of those logits is the normalised geometric mean of the patches' predictions,
the form of p*(x) (Def. 3.1), so evaluation and distillation use the model like any other.  Two risks train it:
cross-entropy of the logits (``standard``: the normalised product, the likelihood of the generator's labels) and the
paper's empirical risk -1/M sum_m log softmax(h_m)_y (teacher method ``patch-erm``, Lemma 3.3), which is
-logits_y without the normalisation.
"""

from __future__ import annotations

import torch.nn as nn
from pydantic import NonNegativeInt, PositiveInt
from torch import Tensor

from kdlab.core.errors import ConfigError
from kdlab.core.registry import MODELS
from kdlab.models.contract import ContractModel, Features


class _ConvReLU(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.conv(x)
        return pre.relu(), pre


class PatchwiseNet(ContractModel):
    """Patch-wise feature extractor + 1x1 head + modified softmax (no batch norm: nothing mixes patches or
    examples)."""

    def __init__(self, num_classes: int, in_channels: int, patch_size: int, width: int, depth: int):
        super().__init__()
        if patch_size < 1 or width < 1 or depth < 0:
            raise ValueError(f"patch_size and width must be >= 1 and depth >= 0 (got {patch_size}, {width}, "
                             f"{depth})")
        self.patch_size = patch_size
        stages = [_ConvReLU(nn.Conv2d(in_channels, width, patch_size, stride=patch_size))]
        stages += [_ConvReLU(nn.Conv2d(width, width, 1)) for _ in range(depth)]
        self.stages = nn.ModuleList(stages)
        self.stage_channels = [width] * (depth + 1)
        self.classifier = nn.Conv2d(width, num_classes, 1)  # w_C

    @property
    def embedding_dim(self) -> int:
        return self.classifier.in_channels

    def patch_log_probs(self, h: Tensor) -> Tensor:
        """log softmax(w_C h_m) of every patch m: (B, M, K)."""
        return self.classifier(h).flatten(2).transpose(1, 2).log_softmax(-1)

    def forward(self, x: Tensor, features: bool = False) -> Tensor | Features:
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is not a grid of {self.patch_size}x{self.patch_size} "
                             "patches")
        outs, pres = self.forward_stages(x)
        logits = self.patch_log_probs(outs[-1]).mean(1)  # log of the modified softmax
        if not features:
            return logits
        return Features(logits, outs, pres, self.embed(outs[-1]))

    def forward_from(self, start: int, h: Tensor) -> Tensor:
        outs, _ = self.forward_stages(h, start)
        return self.patch_log_probs(outs[-1]).mean(1)


@MODELS.register("patchwise", input="image", family="patchwise")
def patchwise(num_classes: int, in_channels: int, patch_size: PositiveInt = 4, width: PositiveInt = 64,
              depth: NonNegativeInt = 1, input_shape: tuple[int, ...] | None = None) -> PatchwiseNet:
    """SoTeacher §3.1's learner: each patch processed independently, a 1x1 head, the modified softmax.

    patch_size: side of the square patches (must divide the image size)
    width: channels of the per-patch feature extractor
    depth: hidden 1x1 layers of the per-patch feature extractor (0: a linear map)
    """
    if input_shape is not None and len(input_shape) == 3 and patch_size >= 1 and \
            (input_shape[1] % patch_size or input_shape[2] % patch_size):
        raise ConfigError(f"model.patch_size: {patch_size} does not divide the inputs' size "
                          f"{tuple(input_shape[1:])} into whole patches")
    return PatchwiseNet(num_classes, in_channels, patch_size, width, depth)
