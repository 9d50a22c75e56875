"""ResNets built from torchvision's architectures (same modules, parameter counts and initialisation), wrapped to
the feature contract.

* ``imagenet_resnet18/34/50/152``: torchvision's ``resnet*``.  ``weights`` loads a local state-dict file in
  torchvision's format (e.g. a downloaded ``resnet18-f37072fd.pth``); ``pretrained: IMAGENET1K_V1`` (or ``DEFAULT``)
  torchvision's released weights, fetched into its cache when asked (:mod:`kdlab.models.pretrained`).
* ``small_input=True`` replaces the 7x7 stride-2 conv and the max pool of the stem by a 3x3 stride-1 conv: this is
  the CIFAR-style ResNet of RepDistiller's ``models/resnetv2.py``, which SoTeacher's code registers as ``ResNet18``
  / ``ResNet34`` and builds with 200 classes for Tiny-ImageNet, i.e. runs on 64x64 inputs without downsampling the
  stem (stages at 64/32/16/8 pixels instead of 16/8/4/2).  Use it to reproduce SoTeacher's Tiny-ImageNet runs.
* ``ResNet50``: the CIFAR bottleneck ResNet-50 of the CRD benchmark (``resnetv2.py``), i.e. torchvision's
  resnet50 with the small-input stem.

Stages follow the reference code's feature points: ``stages[0]`` is the stem conv -> BN -> ReLU *before* the max
pool (as mdistiller's ImageNet ResNet returns it), stage 1 is the max pool (if any) + ``layer1``, stage i is
``layer i``.  ``preact`` is the residual sum of each stage's last block before its ReLU (the reference's
``is_last`` convention) and the stem's BN output.  Any torchvision ResNet (ResNeXt, wide ResNets) is wrapped the
same way by the ``torchvision`` adapter (:mod:`kdlab.models.adapter`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn as nn
from pydantic import BaseModel
from torch import Tensor

from kdlab.core.registry import MODELS
from kdlab.models._weights import load_weights_file
from kdlab.models.contract import ContractModel
from kdlab.models.pretrained import (
    BOTH,
    TorchvisionTag,
    WeightsFile,
    param_error,
    resolve_torchvision,
    torchvision_pretrained,
)

if TYPE_CHECKING:  # torchvision is imported when a model is built, not when kdlab starts
    from torchvision.models import ResNet


class _Stem(nn.Module):
    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.bn(self.conv(x))
        return pre.relu(), pre


def _block_with_preact(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """torchvision's BasicBlock / Bottleneck forward, also returning the residual sum before the final ReLU."""
    out = block.relu(block.bn1(block.conv1(x)))
    if hasattr(block, "conv3"):  # Bottleneck
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    pre = out + (x if block.downsample is None else block.downsample(x))
    return pre.relu(), pre


class _Layer(nn.Module):
    def __init__(self, blocks: nn.Sequential, pool: nn.Module | None = None):
        super().__init__()
        self.pool = pool if pool is not None else nn.Identity()
        self.blocks = blocks

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pool(x)
        for block in self.blocks[:-1]:
            x = block(x)
        return _block_with_preact(self.blocks[-1], x)


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


class TorchvisionResNet(ContractModel):
    """A torchvision ``ResNet`` (its own modules, shared) seen through the feature contract."""

    def __init__(self, net: ResNet):
        super().__init__()
        layers = [net.layer1, net.layer2, net.layer3, net.layer4]
        pool = None if isinstance(net.maxpool, nn.Identity) else net.maxpool
        self.stages = nn.ModuleList([_Stem(net.conv1, net.bn1), _Layer(layers[0], pool),
                                     *[_Layer(layer) for layer in layers[1:]]])
        self.stage_channels = [net.conv1.out_channels] + [_out_channels(layer) for layer in layers]
        self.classifier = net.fc


def set_stem(net: ResNet, in_channels: int, small_input: bool) -> None:
    """Give ``net`` a 3x3 stride-1 stem without max pool (``small_input``) and/or another input channel count."""
    if not small_input and in_channels == net.conv1.in_channels:
        return
    k, stride, pad = (3, 1, 1) if small_input else (7, 2, 3)
    net.conv1 = nn.Conv2d(in_channels, net.conv1.out_channels, k, stride, pad, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    if small_input:
        net.maxpool = nn.Identity()


def build_resnet(arch: str, num_classes: int, in_channels: int = 3, weights: str | None = None,
                 small_input: bool = False, what: str | None = None,
                 pretrained: bool | str | None = None) -> TorchvisionResNet:
    from torchvision.models import get_model

    if pretrained:
        if weights is not None:
            raise ValueError(f"pretrained: {BOTH}")
        if small_input or in_channels != 3:
            raise ValueError("pretrained: torchvision's weights are for the ImageNet stem on 3-channel images"
                             + (" (small_input: false)" if small_input else
                                f"; the data have {in_channels} channels"))
    net = get_model(arch, weights=None, num_classes=num_classes)
    set_stem(net, in_channels, small_input)
    if weights is not None:
        load_weights_file(net, weights, what or arch)
    if pretrained:
        net = torchvision_pretrained(net, arch, pretrained, {}, what or arch)
    return TorchvisionResNet(net)


def _imagenet_preset(arch: str):
    def build(num_classes: int, in_channels: int = 3, weights: WeightsFile = None,
              pretrained: TorchvisionTag = None, small_input: bool = False) -> TorchvisionResNet:
        """torchvision's ResNet.

        small_input: a 3x3 stride-1 stem without max pool (CIFAR / Tiny-ImageNet sizes) instead of ImageNet's
        """
        return build_resnet(arch, num_classes, in_channels, weights, small_input, what=f"imagenet_{arch}",
                            pretrained=pretrained)

    def resolve_params(params: BaseModel) -> BaseModel:
        if params.pretrained not in (None, False) and params.small_input:
            raise param_error(params, "pretrained", "torchvision's weights are for the ImageNet stem: set "
                              "small_input: false", params.pretrained)
        return resolve_torchvision(params, arch)

    build.resolve_params = resolve_params  # the tag is checked and resolved with the config
    return build


for _arch in ("resnet18", "resnet34", "resnet50", "resnet152"):
    MODELS.add(f"imagenet_{_arch}", _imagenet_preset(_arch), input="image", family="resnet_imagenet",
               sample_shape=(3, 64, 64),
               summary=f"torchvision {_arch} (ImageNet stem; small_input: CIFAR-style stem, e.g. Tiny-ImageNet)")


@MODELS.register("ResNet50", input="image", family="resnet_cifar")
def resnet50_cifar(num_classes: int, in_channels: int = 3) -> TorchvisionResNet:
    """CIFAR bottleneck ResNet-50 of the CRD benchmark (3x3 stride-1 stem, no max pool)."""
    return build_resnet("resnet50", num_classes, in_channels, small_input=True)
