"""The feature contract every kdlab model honours.

A model is a stem followed by stages and a head:

    x -> stages[0] (stem) -> stages[1] -> ... -> stages[N] -> embed() -> classifier -> logits

* ``model(x)`` returns the logits;
* ``model(x, features=True)`` returns :class:`Features`: the logits, the output of the stem and of every stage
  (``stages``), the same points before their final non-linearity (``preact``), and the pooled embedding that
  the classifier sees;
* ``model.stage_channels`` lists the channel count of each entry of ``Features.stages``;
* ``model.forward_from(i, h)`` runs stages ``i..N`` and the head on a tensor shaped like the input of stage
  ``i`` (SFTN's student branches use it).

Each stage module returns ``(out, preact)``; a model whose pre-activation of a stage is formed by the layer
that follows it (the WRN: the next block's or the head's batch norm) overrides :meth:`ContractModel.forward_stages`
and :meth:`ContractModel.head_input` instead.  Distillation methods and teacher methods only use this contract,
never a model's internals, so any model that honours it works with all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor


@dataclass
class Features:
    logits: Tensor
    stages: list[Tensor]
    preact: list[Tensor]
    embedding: Tensor


class ContractModel(nn.Module):
    """Base class: subclasses set ``self.stages`` (an nn.ModuleList), ``self.classifier`` and
    ``self.stage_channels``, and may override :meth:`embed` (default: global average pooling + flatten) and
    :meth:`head_input` (default: the last stage's output)."""

    stages: nn.ModuleList
    classifier: nn.Module
    stage_channels: list[int]

    def embed(self, h: Tensor) -> Tensor:
        return h.flatten(2).mean(-1) if h.dim() > 2 else h

    @property
    def embedding_dim(self) -> int:
        return self.classifier.in_features

    def forward_stages(self, x: Tensor, start: int = 0) -> tuple[list[Tensor], list[Tensor]]:
        outs, pres = [], []
        for stage in self.stages[start:]:
            x, pre = stage(x)
            outs.append(x)
            pres.append(pre)
        return outs, pres

    def head_input(self, outs: list[Tensor], pres: list[Tensor]) -> Tensor:
        """What :meth:`embed` receives, from the stage outputs and pre-activations of a forward pass (default:
        the last stage's output).  A model whose head starts with a layer that also defines the last stage's
        ``preact`` (WRN's final BN) returns that pre-activation here, so the layer runs once."""
        return outs[-1]

    def forward(self, x: Tensor, features: bool = False) -> Tensor | Features:
        outs, pres = self.forward_stages(x)
        emb = self.embed(self.head_input(outs, pres))
        logits = self.classifier(emb)
        if not features:
            return logits
        return Features(logits, outs, pres, emb)

    def forward_from(self, start: int, h: Tensor) -> Tensor:
        outs, pres = self.forward_stages(h, start)
        return self.classifier(self.embed(self.head_input(outs, pres)))


class Stage(nn.Sequential):
    """A sequence of blocks that each return ``(out, preact)``; returns the last block's pair."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        pre = x
        for block in self:
            x, pre = block(x)
        return x, pre


class ConvBNAct(nn.Module):
    """conv -> BN -> ReLU, returning (post-ReLU, pre-ReLU)."""

    def __init__(self, conv: nn.Module, channels: int, bn: type[nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv = conv
        self.bn = bn(channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.bn(self.conv(x))
        return pre.relu(), pre


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions (fan_out, ReLU), unit BN scales, zero biases: the CIFAR reference init."""
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
