"""Small models for sequences and vectors: a 1D CNN (MNIST-1D) and an MLP (any input)."""

from __future__ import annotations

import math
from typing import Annotated

import torch.nn as nn
from pydantic import Field, PositiveInt
from torch import Tensor

from kdlab.core.registry import MODELS
from kdlab.models.contract import ContractModel, ConvBNAct, Stage, init_weights

Widths = Annotated[tuple[PositiveInt, ...], Field(min_length=1)]  # one layer or stage at least


class CNN1d(ContractModel):
    """Stem conv + stages of conv-BN-ReLU blocks on (C, L) sequences; stages after the first halve L.

    ``batch_norm: false`` gives conv(+bias)-ReLU blocks (as the MLP's option: no statistic depends on how a batch
    is split over processes)."""

    def __init__(self, num_classes: int, in_channels: int, channels: list[int], blocks_per_stage: int = 1,
                 kernel_size: int = 5, batch_norm: bool = True):
        super().__init__()
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels must list the stem width and at least one stage width, each >= 1 "
                             f"(got {channels})")
        pad = kernel_size // 2
        norm = nn.BatchNorm1d if batch_norm else (lambda _: nn.Identity())
        stages: list[nn.Module] = [ConvBNAct(nn.Conv1d(in_channels, channels[0], kernel_size, padding=pad,
                                                       bias=not batch_norm), channels[0], norm)]
        for i in range(1, len(channels)):
            blocks = []
            for j in range(blocks_per_stage):
                cin = channels[i - 1] if j == 0 else channels[i]
                stride = 2 if (j == 0 and i > 1) else 1
                conv = nn.Conv1d(cin, channels[i], kernel_size, stride=stride, padding=pad, bias=not batch_norm)
                blocks.append(ConvBNAct(conv, channels[i], norm))
            stages.append(Stage(*blocks))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(channels)
        self.classifier = nn.Linear(channels[-1], num_classes)
        init_weights(self)


@MODELS.register("cnn1d", input="sequence", family="cnn1d")
def cnn1d(num_classes: int, in_channels: int = 1, channels: Widths = (32, 32, 64, 128),
          blocks_per_stage: PositiveInt = 1, kernel_size: PositiveInt = 5, batch_norm: bool = True) -> CNN1d:
    """1D CNN: stem + one stage per extra width; stages after the first downsample by 2.

    channels: the stem's width, then one stage per further width
    blocks_per_stage: residual blocks per stage
    kernel_size: the convolutions' kernel size
    batch_norm: batch norm after each convolution
    """
    return CNN1d(num_classes, in_channels, list(channels), blocks_per_stage, kernel_size, batch_norm)


class _Flatten(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return x, x


class MLP(ContractModel):
    """Flatten, then Linear-BN-ReLU hidden layers (one stage each), then a linear classifier.

    ``batch_norm: false`` gives Linear(+bias)-ReLU layers: no statistic depends on how a batch is split, which makes
    runs on several processes numerically comparable to one process.
    """

    def __init__(self, num_classes: int, input_size: int, hidden: list[int], batch_norm: bool = True):
        super().__init__()
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must list at least one layer width, each >= 1 (got {hidden})")
        stages: list[nn.Module] = [_Flatten()]
        widths = [input_size, *hidden]
        for a, b in zip(widths[:-1], widths[1:]):
            if batch_norm:
                stages.append(ConvBNAct(nn.Linear(a, b, bias=False), b, nn.BatchNorm1d))
            else:
                stages.append(ConvBNAct(nn.Linear(a, b), b, lambda _: nn.Identity()))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = widths
        self.classifier = nn.Linear(hidden[-1], num_classes)


@MODELS.register("mlp", input="any", family="mlp")
def mlp(num_classes: int, input_shape: tuple[int, ...], hidden: Widths = (256, 256),
        batch_norm: bool = True) -> MLP:
    """Multi-layer perceptron on the flattened input.

    hidden: widths of the hidden layers (one at least)
    batch_norm: batch norm after each hidden layer
    """
    return MLP(num_classes, math.prod(input_shape), list(hidden), batch_norm)
