"""MobileNetV2 for CIFAR as in the CRD benchmark (RepDistiller ``models/mobilenetv2.py``).

``MobileNetV2`` with its defaults is the reference's ``mobile_half`` (expansion 6, width 0.5), the student the
papers call MobileNetV2.  Like the reference, and unlike torchvision's, every inverted residual keeps its 1x1
expansion conv even at expansion 1, the stem conv has stride 2 (32x32 inputs become 16x16), and the head is a
1x1 conv to 1280 channels (never narrowed) + BN + ReLU, average pooling, and one linear layer.

Stages: the stem, then the inverted-residual groups merged at the reference's feature points:
groups (0, 1), (2,), (3, 4), (5, 6).  Block outputs are linear bottlenecks (no ReLU), so ``preact`` equals the
stage outputs, as in the reference (which returns the same list with and without ``preact``); the stem's preact
is its BN output before the ReLU.  The embedding is the pooled 1280-d output of the head conv.

Where kdlab differs: the reference pools with a fixed 2x2 window sized for 32x32 inputs; kdlab pools globally,
which is the same at 32x32 and also works for other input sizes.
"""

from __future__ import annotations

import torch.nn as nn
from pydantic import PositiveFloat, PositiveInt
from torch import Tensor

from kdlab.core.registry import MODELS
from kdlab.models.contract import ContractModel, ConvBNAct, Stage, init_weights

# (expansion, channels, blocks, stride) of the seven groups; expansion None means the model's expansion ratio
_GROUPS = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
           (None, 160, 3, 2), (None, 320, 1, 1)]
_STAGE_GROUPS = [(0, 1), (2,), (3, 4), (5, 6)]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.conv(x)
        if self.residual:
            out = out + x
        return out, out


class MobileNetV2Cifar(ContractModel):
    def __init__(self, num_classes: int, in_channels: int = 3, expansion: int = 6, width: float = 0.5):
        super().__init__()
        stem_width = cin = int(32 * width)
        groups: list[list[nn.Module]] = []
        for t, c, n, s in _GROUPS:
            cout = int(c * width)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(cin, cout, s if j == 0 else 1, expansion if t is None else t))
                cin = cout
            groups.append(blocks)
        stages: list[nn.Module] = [ConvBNAct(nn.Conv2d(in_channels, stem_width, 3, 2, 1, bias=False), stem_width)]
        stages += [Stage(*[b for g in idx for b in groups[g]]) for idx in _STAGE_GROUPS]
        self.stages = nn.ModuleList(stages)
        self.stage_channels = [stem_width] + [int(_GROUPS[idx[-1]][1] * width) for idx in _STAGE_GROUPS]
        head_width = int(1280 * width) if width > 1.0 else 1280
        self.head = ConvBNAct(nn.Conv2d(cin, head_width, 1, bias=False), head_width)
        self.classifier = nn.Linear(head_width, num_classes)
        init_weights(self)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def embed(self, h: Tensor) -> Tensor:
        return self.head(h)[0].flatten(2).mean(-1)


@MODELS.register("MobileNetV2", input="image", family="mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int = 3, expansion: PositiveInt = 6,
                width: PositiveFloat = 0.5) -> MobileNetV2Cifar:
    """MobileNetV2 for CIFAR, half width (the CRD benchmark's mobile_half).

    expansion: the inverted residual blocks' expansion factor (channels inside a block / its input channels)
    width: multiplier of every layer's channels (0.5: the CRD benchmark's half width)
    """
    return MobileNetV2Cifar(num_classes, in_channels, expansion, width)
