"""ShuffleNetV1 and ShuffleNetV2 for CIFAR as in the CRD benchmark (RepDistiller ``models/ShuffleNetv1.py`` and
``models/ShuffleNetv2.py``; ``ShuffleV1`` is groups 3, ``ShuffleV2`` is net size 1).

Both have a 1x1-conv stem with 24 channels at full resolution (no max pool) and three stages that each halve the
resolution.  Weights keep PyTorch's default initialisation, as in the reference.

``preact`` is the last block's output before its final ReLU, as the reference returns for ``is_last`` blocks:
ShuffleV1's concatenation (stride 2) or sum; ShuffleV2's concatenation of the untouched half with the branch's
last BN output.  The stems' preact is their BN output.  Where kdlab differs: the reference returns ShuffleV2's
preact *before* the channel shuffle that its output goes through, so its channels are in another order than the
output's; kdlab shuffles it too, so that ``stages[i] == relu(preact[i])`` channel for channel.  The reference pools
with a fixed 4x4 window sized for 32x32 inputs; kdlab pools globally (the same at 32x32).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import PositiveInt
from torch import Tensor

from kdlab.core.registry import MODELS
from kdlab.models.contract import ContractModel, ConvBNAct, Stage


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _stem(in_channels: int, width: int = 24) -> ConvBNAct:
    return ConvBNAct(nn.Conv2d(in_channels, width, 1, bias=False), width)


def _bn_conv(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class ShuffleV1Block(nn.Module):
    """Grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1.  At stride 2 the branch adds ``cout - cin``
    channels to an average-pooled copy of the input (concatenation); otherwise it is a residual."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, group_first: bool = True):
        super().__init__()
        self.stride = stride
        branch = cout - cin if stride == 2 else cout
        mid = branch // 4
        # the first block of the network sees only the 24-channel stem: its first 1x1 conv is not grouped
        self.g1 = groups if group_first else 1
        self.conv1 = _bn_conv(cin, mid, groups=self.g1)
        self.conv2 = _bn_conv(mid, mid, 3, stride, groups=mid)
        self.conv3 = _bn_conv(mid, branch, groups=groups)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = channel_shuffle(self.conv1(x).relu(), self.g1)
        out = self.conv3(self.conv2(out).relu())
        pre = torch.cat([out, self.pool(x)], 1) if self.pool is not None else out + x
        return pre.relu(), pre


class ShuffleNetV1(ContractModel):
    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (240, 480, 960),
                 blocks: tuple[int, ...] = (4, 8, 4), groups: int = 3):
        super().__init__()
        stages: list[nn.Module] = [_stem(in_channels)]
        cin = 24
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = [ShuffleV1Block(cin, w, 2, groups, group_first=i > 0)]
            layers += [ShuffleV1Block(w, w, 1, groups) for _ in range(n - 1)]
            stages.append(Stage(*layers))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.stage_channels = [24, *widths]
        self.classifier = nn.Linear(widths[-1], num_classes)


class ShuffleV2Down(nn.Module):
    """Stride-2 unit: two branches on the whole input (depthwise-pointwise; pointwise-depthwise-pointwise)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(_bn_conv(cin, cin, 3, 2, groups=cin), _bn_conv(cin, mid))
        self.right1 = _bn_conv(cin, mid)
        self.right2 = nn.Sequential(_bn_conv(mid, mid, 3, 2, groups=mid), _bn_conv(mid, mid))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = torch.cat([self.left(x).relu(), self.right2(self.right1(x).relu()).relu()], 1)
        out = channel_shuffle(out, 2)
        return out, out


class ShuffleV2Unit(nn.Module):
    """Stride-1 unit: half of the channels pass through, the other half go through pointwise-depthwise-pointwise."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = _bn_conv(half, half)
        self.conv2 = _bn_conv(half, half, 3, groups=half)
        self.conv3 = _bn_conv(half, half)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        keep, x2 = x.chunk(2, dim=1)
        branch = self.conv3(self.conv2(self.conv1(x2).relu()))
        pre = channel_shuffle(torch.cat([keep, branch], 1), 2)
        return pre.relu(), pre


class ShuffleNetV2(ContractModel):
    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (116, 232, 464),
                 blocks: tuple[int, ...] = (3, 7, 3), head_width: int = 1024):
        super().__init__()
        stages: list[nn.Module] = [_stem(in_channels)]
        cin = 24
        for w, n in zip(widths, blocks):
            # the reference counts only the stride-1 units: a stage has n + 1 units
            stages.append(Stage(ShuffleV2Down(cin, w), *[ShuffleV2Unit(w) for _ in range(n)]))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.stage_channels = [24, *widths]
        self.head = ConvBNAct(nn.Conv2d(cin, head_width, 1, bias=False), head_width)
        self.classifier = nn.Linear(head_width, num_classes)

    def embed(self, h: Tensor) -> Tensor:
        return self.head(h)[0].flatten(2).mean(-1)


Three = tuple[PositiveInt, PositiveInt, PositiveInt]  # one per stage


@MODELS.register("ShuffleV1", input="image", family="shufflenet")
def shuffle_v1(num_classes: int, in_channels: int = 3) -> ShuffleNetV1:
    """ShuffleNetV1 (groups 3, 240/480/960 channels) for CIFAR, as in the CRD benchmark."""
    return ShuffleNetV1(num_classes, in_channels)


@MODELS.register("ShuffleV2", input="image", family="shufflenet")
def shuffle_v2(num_classes: int, in_channels: int = 3) -> ShuffleNetV2:
    """ShuffleNetV2 (net size 1: 116/232/464 channels, 1024 head) for CIFAR, as in the CRD benchmark."""
    return ShuffleNetV2(num_classes, in_channels)


@MODELS.register("shufflenet_v1", input="image", family="shufflenet")
def shufflenet_v1(num_classes: int, in_channels: int = 3, widths: Three = (240, 480, 960),
                  blocks: Three = (4, 8, 4), groups: PositiveInt = 3) -> ShuffleNetV1:
    """ShuffleNetV1 with any stage widths / blocks (each width minus the previous a multiple of 4 x groups).

    widths: output channels of the three stages
    blocks: units per stage
    groups: groups of the grouped 1x1 convolutions
    """
    return ShuffleNetV1(num_classes, in_channels, tuple(widths), tuple(blocks), groups)


@MODELS.register("shufflenet_v2", input="image", family="shufflenet")
def shufflenet_v2(num_classes: int, in_channels: int = 3, widths: Three = (116, 232, 464),
                  blocks: Three = (3, 7, 3), head_width: PositiveInt = 1024) -> ShuffleNetV2:
    """ShuffleNetV2 with any (even) stage widths, blocks and head width.

    widths: output channels of the three stages (even)
    blocks: units per stage
    head_width: channels of the last 1x1 convolution before pooling
    """
    return ShuffleNetV2(num_classes, in_channels, tuple(widths), tuple(blocks), head_width)
