"""VGG with batch norm, the CIFAR variants of the CRD benchmark (RepDistiller ``models/vgg.py``, ``vgg*_bn``).

Five blocks of 3x3 conv (with bias) -> BN -> ReLU, separated by 2x2 max pools; no fully connected layers but the
classifier: global average pooling then one linear layer on 512 features.

Stages: ``stages[0]`` is block 0 (the stem); stage i (1..4) is the max pool that follows block i-1, then block i.
``preact`` of every stage is its last BN output before the ReLU, as the reference returns with ``preact=True``
(the reference returns the post-ReLU stem there; kdlab gives the pre-ReLU stem, like its other models).

Where kdlab differs: the reference adds a pool before block 4 only when the input height is exactly 64
(Tiny-ImageNet) so that the last map is 4x4; kdlab decides that once from the data set's input shape, for any input
of 64 pixels or more.
"""

from __future__ import annotations

from typing import Annotated

import torch.nn as nn
from pydantic import Field, PositiveFloat
from torch import Tensor

from kdlab.core.registry import MODELS
from kdlab.models.contract import ContractModel, ConvBNAct, Stage, init_weights

# channels of the conv layers of blocks 0..4
CONFIGS: dict[int, list[list[int]]] = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class _MaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pool(x)
        return x, x


class VGG(ContractModel):
    def __init__(self, blocks: list[list[int]], num_classes: int, in_channels: int = 3, pool_last: bool = False):
        super().__init__()
        stages: list[nn.Module] = []
        cin = in_channels
        for i, widths in enumerate(blocks):
            layers: list[nn.Module] = [_MaxPool()] if 0 < i < 4 or (i == 4 and pool_last) else []
            for w in widths:
                layers.append(ConvBNAct(nn.Conv2d(cin, w, 3, padding=1), w))
                cin = w
            stages.append(Stage(*layers))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = [b[-1] for b in blocks]
        self.classifier = nn.Linear(cin, num_classes)
        init_weights(self)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)


def _preset(depth: int):
    def build(num_classes: int, in_channels: int = 3, input_shape: tuple[int, ...] = (3, 32, 32)) -> VGG:
        return VGG(CONFIGS[depth], num_classes, in_channels, pool_last=input_shape[-1] >= 64)

    return build


for _depth in CONFIGS:
    MODELS.add(f"vgg{_depth}", _preset(_depth), input="image", family="vgg",
               summary=f"VGG-{_depth} with BN, CIFAR variant of the CRD benchmark")


@MODELS.register("vgg", input="image", family="vgg")
def vgg(num_classes: int, in_channels: int = 3, input_shape: tuple[int, ...] = (3, 32, 32),
        depth: Annotated[int, Field(ge=min(CONFIGS), le=max(CONFIGS))] = 8, width: PositiveFloat = 1.0) -> VGG:
    """VGG-depth (8, 11, 13, 16, 19) with BN and every conv's channels scaled by ``width``.

    depth: 8, 11, 13, 16 or 19 (the CRD benchmark's vgg8_bn ... vgg19_bn)
    width: multiplier of every convolution's channels
    """
    if depth not in CONFIGS:
        raise ValueError(f"depth must be one of {sorted(CONFIGS)}, got {depth}")
    blocks = [[max(1, round(c * width)) for c in b] for b in CONFIGS[depth]]
    return VGG(blocks, num_classes, in_channels, pool_last=input_shape[-1] >= 64)
