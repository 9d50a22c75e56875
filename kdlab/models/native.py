"""The model a kdlab model stands for (:func:`native_module`), whose key names weights files of the model's own code
use, and loading such a file into a kdlab model (:func:`load_pretrained`)."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from kdlab.models._weights import fit_problems, load_state, read_state_dict
from kdlab.models.torchvision_resnet import TorchvisionResNet


def native_module(model: nn.Module) -> nn.Module:
    """The model a kdlab model stands for, sharing its parameters: the wrapped ``nn.Module`` of the ``module`` and
    ``torchvision`` adapters, a torchvision ``ResNet`` for the models built on one (``imagenet_resnet*``,
    ``ResNet50``, the torchvision adapter's ResNets), else the model itself.  Its state dict has the key names
    of the model's own code (no ``net.`` / ``stages.`` of kdlab's wrappers)."""
    net = getattr(model, "net", None)
    # the adapters (module, torchvision, timm) keep the wrapped model as ``net`` and no state of their own
    if isinstance(net, nn.Module) and list(model.state_dict()) == [f"net.{k}" for k in net.state_dict()]:
        return net
    if isinstance(model, TorchvisionResNet):
        return _as_torchvision_resnet(model)
    return model


def _as_torchvision_resnet(model: nn.Module) -> nn.Module:
    """A torchvision ``ResNet`` made of a TorchvisionResNet's modules (the wrapper keeps them, not the ResNet)."""
    from torchvision.models import ResNet

    net = ResNet.__new__(ResNet)
    nn.Module.__init__(net)
    stem, first, *rest = model.stages
    net.conv1, net.bn1, net.relu = stem.conv, stem.bn, nn.ReLU(inplace=True)
    net.maxpool = first.pool
    for i, stage in enumerate([first, *rest], start=1):
        setattr(net, f"layer{i}", stage.blocks)
    net.avgpool, net.fc = nn.AdaptiveAvgPool2d((1, 1)), model.classifier
    net.train(model.training)
    return net


def load_pretrained(model: nn.Module, path: str | Path, what: str) -> None:
    """Load a weights file into a kdlab model: in the key names of the model's own code (:func:`native_module`:
    a torchvision file into the torchvision adapter) or, failing that, in kdlab's (a kdlab ``model_state``)."""
    state = read_state_dict(path, what)
    native = native_module(model)
    if native is not model and not fit_problems(model, state):
        model.load_state_dict(state, strict=False)
        return
    load_state(native, state, what, path)
