"""Wide ResNets (WRN-depth-width) as in the CRD benchmark code: pre-activation blocks, 3 stages.

WRN blocks are pre-activation (BN -> ReLU -> conv), so a stage's output is the raw residual sum, which is already
the pre-activation of what follows: ``Features.stages`` and ``Features.preact`` hold the same tensors for the
stem and stages, as in the reference code's default feature list.  The final BN + ReLU belong to the head.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from ..registry import MODELS
from .contract import ContractModel, Stage, init_weights


class WRNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.equal = cin == cout and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        act = self.bn1(x).relu()
        out = self.conv2(self.drop(self.bn2(self.conv1(act)).relu()))
        # the reference code feeds the activated input to the projection shortcut, the raw input to the identity
        out = out + (x if self.shortcut is None else self.shortcut(act))
        return out, out


class _Stem(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.conv(x)
        return out, out


class WideResNet(ContractModel):
    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * width, 32 * width, 64 * width]
        stages: list[nn.Module] = [_Stem(in_channels, ch[0])]
        for i, stride in enumerate((1, 2, 2), start=1):
            blocks = [WRNBlock(ch[i - 1] if j == 0 else ch[i], ch[i], stride if j == 0 else 1, dropout)
                      for j in range(n)]
            stages.append(Stage(*blocks))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = ch
        self.bn = nn.BatchNorm2d(ch[3])
        self.classifier = nn.Linear(ch[3], num_classes)
        init_weights(self)
        nn.init.zeros_(self.classifier.bias)

    def embed(self, h: Tensor) -> Tensor:
        return self.bn(h).relu().flatten(2).mean(-1)


def _preset(depth: int, width: int):
    def build(num_classes: int, in_channels: int = 3) -> WideResNet:
        return WideResNet(depth, width, num_classes, in_channels)

    return build


for _d, _w in ((16, 1), (16, 2), (40, 1), (40, 2), (16, 4), (28, 4)):
    MODELS.add(f"wrn_{_d}_{_w}", _preset(_d, _w), summary=f"Wide ResNet {_d}-{_w}", input="image", family="wrn")


@MODELS.register("wrn", input="image", family="wrn")
def wrn(num_classes: int, in_channels: int = 3, depth: int = 16, width: int = 2, dropout: float = 0.0) -> WideResNet:
    """Wide ResNet with any depth (6n+4), width and dropout."""
    return WideResNet(depth, width, num_classes, in_channels, dropout)
