"""Wide ResNets (WRN-depth-width) as in the CRD benchmark code: pre-activation blocks, 3 stages.

WRN blocks are pre-activation (BN -> ReLU -> conv), so a stage's output, ``Features.stages[i]``, is the raw
residual sum (the stem's: its convolution's output), as in the reference code's feature list.  Its
pre-activation, ``Features.preact[i]``, is what the reference code behind the papers' tables (RepDistiller and
SoTeacher ``models/wrn.py`` with ``preact=True``, mdistiller's ``preact_feats``) returns: the batch norm that
the network applies to that sum next, i.e. the next stage's first ``bn1`` for stages 1..N-1 and the final BN
(``self.bn``, the head's) for the last stage, so that ``relu(preact[i])`` is what the next convolution sees.  The
stem's preact is its raw convolution output (the reference's f0), ``preact[0] is stages[0]``.

No extra computation: :meth:`WideResNet.forward_stages` runs each of these batch norms once and hands its output
on, to the next stage's first block (which would compute ``bn1(x)`` first anyway) and to the head
(:meth:`WideResNet.head_input`; :meth:`WideResNet.embed` then applies ReLU + pooling), so the logits are those of
a plain forward pass, with or without features.  The reference instead calls these batch norms a second time on
the stored sums when features are requested: the values and gradients are the same, but in train mode their
running statistics are updated twice per step (with the same batch moments, i.e. an effective momentum of
1 - 0.9^2 = 0.19, and ``num_batches_tracked`` counting 2); kdlab updates them once per forward pass.

``forward_from(i, h)`` starts from the input of stage i (SFTN's branches), whose first block applies its own bn1.
Parameter names (``stages.i.j.bn1``, ``bn``, ``classifier``, ...) are as in earlier kdlab versions, so saved
checkpoints load.
"""

from __future__ import annotations

from typing import Annotated

import torch.nn as nn
from pydantic import Field, PositiveInt
from torch import Tensor

from kdlab.core.registry import MODELS
from kdlab.models.contract import ContractModel, init_weights


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

    def forward(self, x: Tensor, bn_x: Tensor | None = None) -> Tensor:
        """The raw residual sum; ``bn_x`` is ``self.bn1(x)`` when the caller has computed it already."""
        act = (self.bn1(x) if bn_x is None else bn_x).relu()
        out = self.conv2(self.drop(self.bn2(self.conv1(act)).relu()))
        # the reference code feeds the activated input to the projection shortcut, the raw input to the identity
        return out + (x if self.shortcut is None else self.shortcut(act))


class _WRNStage(nn.Sequential):
    """The blocks of one stage; returns the raw residual sum (its pre-activation is formed by the next layer, see
    :meth:`WideResNet.forward_stages`)."""

    def forward(self, x: Tensor, bn_x: Tensor | None = None) -> Tensor:  # type: ignore[override]
        for j, block in enumerate(self):
            x = block(x, bn_x if j == 0 else None)
        return x


class _Stem(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


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
            stages.append(_WRNStage(*blocks))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = ch
        self.bn = nn.BatchNorm2d(ch[3])
        self.classifier = nn.Linear(ch[3], num_classes)
        init_weights(self)
        nn.init.zeros_(self.classifier.bias)

    def forward_stages(self, x: Tensor, start: int = 0) -> tuple[list[Tensor], list[Tensor]]:
        outs, pres = [], []
        last = len(self.stages) - 1
        bn_x = None  # bn1 of the current stage's input, when already computed (the previous stage's preact)
        for i in range(start, last + 1):
            x = self.stages[i](x) if i == 0 else self.stages[i](x, bn_x)
            if i == 0:
                pre, bn_x = x, None  # the stem's raw output; stage 1's first block applies its bn1 itself
            else:
                pre = bn_x = self.stages[i + 1][0].bn1(x) if i < last else self.bn(x)
            outs.append(x)
            pres.append(pre)
        return outs, pres

    def head_input(self, outs: list[Tensor], pres: list[Tensor]) -> Tensor:
        return pres[-1]  # the final BN's output, computed once in forward_stages

    def embed(self, h: Tensor) -> Tensor:
        """ReLU + global average pooling of the final BN's output (``head_input``)."""
        return h.relu().flatten(2).mean(-1)


def _preset(depth: int, width: int):
    def build(num_classes: int, in_channels: int = 3) -> WideResNet:
        return WideResNet(depth, width, num_classes, in_channels)

    return build


for _d, _w in ((16, 1), (16, 2), (40, 1), (40, 2), (16, 4), (28, 4)):
    MODELS.add(f"wrn_{_d}_{_w}", _preset(_d, _w), summary=f"Wide ResNet {_d}-{_w}", input="image", family="wrn")


# depth >= 10: 6n+4 with n >= 1, as a stage without blocks cannot be built
@MODELS.register("wrn", input="image", family="wrn")
def wrn(num_classes: int, in_channels: int = 3, depth: Annotated[int, Field(ge=10)] = 16, width: PositiveInt = 2,
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0) -> WideResNet:
    """Wide ResNet with any depth (6n+4), width and dropout.

    depth: layers, 6n+4 (n blocks per stage)
    width: multiplier of the stages' widths 16, 32, 64
    dropout: dropout probability between a block's two convolutions
    """
    return WideResNet(depth, width, num_classes, in_channels, dropout)
