"""MobileNetV1, the ImageNet student of the CRD and comprehensive-overhaul (OFD) code (mdistiller
``models/imagenet/mobilenetv1.py``): a 3x3 stride-2 stem with 32 channels, 13 depthwise-separable blocks
(depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU), global average pooling and one linear layer on 1024
features.  Weights keep PyTorch's default initialisation, as in the reference.

Stages: the stem (112x112 at 224 input), then the reference's four feature points, after blocks 3, 5, 11 and 13
(128, 256, 512 and 1024 channels at 56, 28, 14 and 7 pixels).  ``preact`` is each stage's last pointwise BN output
before its ReLU, the reference's ``preact_feats``; the stem's preact is its BN output.  The reference has no stem
feature; kdlab adds it so that every model starts its feature list with the stem.  The reference pools with a fixed
7x7 window sized for 224x224 inputs; kdlab pools globally (the same at 224x224).
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from kdlab.core.registry import MODELS
from kdlab.models.contract import ContractModel, ConvBNAct, Stage

# (output channels, stride) of the 13 depthwise-separable blocks, grouped into the four stages
_STAGES = [[(64, 1), (128, 2), (128, 1)], [(256, 2), (256, 1)], [(512, 2)] + [(512, 1)] * 5,
           [(1024, 2), (1024, 1)]]


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                nn.ReLU(inplace=True))
        self.pw = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.pw(self.dw(x))
        return pre.relu(), pre


class MobileNetV1(ContractModel):
    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        stages: list[nn.Module] = [ConvBNAct(nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False), 32)]
        cin = 32
        for spec in _STAGES:
            blocks = []
            for cout, stride in spec:
                blocks.append(DepthwiseSeparable(cin, cout, stride))
                cin = cout
            stages.append(Stage(*blocks))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = [32] + [spec[-1][0] for spec in _STAGES]
        self.classifier = nn.Linear(cin, num_classes)


@MODELS.register("imagenet_mobilenetv1", input="image", family="mobilenetv1", sample_shape=(3, 64, 64))
def imagenet_mobilenetv1(num_classes: int, in_channels: int = 3) -> MobileNetV1:
    """MobileNetV1, the ImageNet student of the CRD / OFD code."""
    return MobileNetV1(num_classes, in_channels)
