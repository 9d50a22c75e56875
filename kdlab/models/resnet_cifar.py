"""CIFAR-style ResNets as in the CRD benchmark code the papers used (3 stages, 16/32/64 or x4-wide filters).

``resnet8x2`` appears in the SFTN paper's tables (Tables 1 and 7) but in none of the public CRD-derived code bases
we could find (one unofficial SFTN copy defines it as an exact duplicate of resnet8x4, marked TODO).  kdlab defines
it by analogy with resnet8x4, whose stages are 4x the 16/32/64 filters and whose stem is half its first stage:
stages 32/64/128 (2x) and a 16-filter stem.  Its accuracy alone in the paper (68.19 %) sits between WRN16-1
(67.10 %) and resnet8x4 (72.38 %), consistent with its size (0.31 M parameters at 100 classes).
"""

from __future__ import annotations

from typing import Annotated

import torch.nn as nn
from pydantic import Field, PositiveInt
from torch import Tensor

from kdlab.core.registry import MODELS
from kdlab.models.contract import ContractModel, ConvBNAct, Stage, init_weights


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        pre = out + (self.downsample(x) if self.downsample is not None else x)
        return pre.relu(), pre


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out)).relu()
        out = self.bn3(self.conv3(out))
        pre = out + (self.downsample(x) if self.downsample is not None else x)
        return pre.relu(), pre


class CifarResNet(ContractModel):
    """ResNet-depth for 32x32 inputs: stem conv3x3, three stages (strides 1, 2, 2), global pool, linear."""

    def __init__(self, depth: int, filters: list[int], block: str = "basic", num_classes: int = 100,
                 in_channels: int = 3):
        super().__init__()
        if block == "basic":
            blk, per = BasicBlock, 6
        elif block == "bottleneck":
            blk, per = Bottleneck, 9
        else:
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if (depth - 2) % per:
            raise ValueError(f"depth {depth} is not 6n+2 (basic) / 9n+2 (bottleneck)")
        n = (depth - 2) // per
        self.inplanes = filters[0]
        stem = ConvBNAct(conv3x3(in_channels, filters[0]), filters[0])
        self.stages = nn.ModuleList([
            stem,
            self._make_stage(blk, filters[1], n, 1),
            self._make_stage(blk, filters[2], n, 2),
            self._make_stage(blk, filters[3], n, 2),
        ])
        self.stage_channels = [filters[0]] + [f * blk.expansion for f in filters[1:]]
        self.classifier = nn.Linear(filters[3] * blk.expansion, num_classes)
        init_weights(self)

    def _make_stage(self, blk: type[nn.Module], planes: int, n: int, stride: int) -> Stage:
        down = None
        if stride != 1 or self.inplanes != planes * blk.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * blk.expansion, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes * blk.expansion))
        layers = [blk(self.inplanes, planes, stride, down)]
        self.inplanes = planes * blk.expansion
        layers += [blk(self.inplanes, planes) for _ in range(1, n)]
        return Stage(*layers)


def _preset(depth: int, filters: list[int], block: str = "basic"):
    def build(num_classes: int, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, filters, block, num_classes, in_channels)

    return build


_SLIM = [16, 16, 32, 64]
_WIDE2 = [16, 32, 64, 128]
_WIDE4 = [32, 64, 128, 256]
for _depth in (8, 14, 20, 32, 44, 56, 110):
    MODELS.add(f"resnet{_depth}", _preset(_depth, _SLIM), input="image", family="resnet_cifar",
               summary=f"CIFAR ResNet-{_depth} (16/32/64 filters)")
MODELS.add("resnet8x2", _preset(8, _WIDE2), input="image", family="resnet_cifar",
           summary="CIFAR ResNet-8, 2x wider (16 stem, 32/64/128 filters; SFTN paper, defined by analogy)")
for _depth in (8, 32):
    MODELS.add(f"resnet{_depth}x4", _preset(_depth, _WIDE4), input="image", family="resnet_cifar",
               summary=f"CIFAR ResNet-{_depth}, 4x wider (32 stem, 64/128/256 filters)")


# depth >= 8: a stage builds its first block even when 6n+2 gives n = 0, so depth 2 would be a ResNet-8
@MODELS.register("resnet_cifar", input="image", family="resnet_cifar")
def resnet_cifar(num_classes: int, in_channels: int = 3, depth: Annotated[int, Field(ge=8)] = 20,
                 filters: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt] = (16, 16, 32, 64),
                 block: str = "basic") -> CifarResNet:
    """CIFAR ResNet with any depth / filters / block type.

    depth: layers: 6n+2 with basic blocks, 9n+2 with bottleneck blocks (n blocks per stage)
    filters: widths of the stem and the three stages (resnet8x4: 32, 64, 128, 256)
    block: basic or bottleneck
    """
    return CifarResNet(depth, list(filters), block, num_classes, in_channels)
