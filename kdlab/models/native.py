"""The model a kdlab model stands for (:func:`native_module`), whose key names weights files of the model's own code
use, and loading a weights file into a kdlab model (:func:`load_pretrained`): in those key names, in kdlab's, or in
those of another distillation code (:mod:`kdlab.models.foreign`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from kdlab.core.errors import CheckpointError
from kdlab.models._weights import fit_problems, load_state, read_weights
from kdlab.models.foreign import FOREIGN_FORMATS, WEIGHTS_FORMATS, KeyMapError, RefusedModel, convert, placed
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


def load_pretrained(model: nn.Module, path: str | Path, what: str, weights_format: str = "auto") -> str:
    """Load a weights file into a kdlab model strictly and return the format it was read in (see
    :data:`~kdlab.models.foreign.WEIGHTS_FORMATS`):

    * ``plain``: the key names of the model's own code (:func:`native_module`: a torchvision file into the
      torchvision adapter);
    * ``kdlab``: kdlab's key names (a kdlab model's ``state_dict()``);
    * ``repdistiller`` / ``mdistiller`` / ``torchdistill``: a checkpoint of that code, through kdlab's key map of
      the model's family (:mod:`kdlab.models.foreign`);
    * ``auto``: the first of kdlab, plain and the foreign formats that fits (the one a torchdistill file's
      ``args`` / ``lr_scheduler`` point to first).  Formats whose maps are the same for a file (RepDistiller's and
      mdistiller's models, their ResNets and torchdistill's) load the same tensors; the first is returned.

    Any problem is a one-line :class:`CheckpointError` naming the first key that does not fit."""
    if weights_format not in WEIGHTS_FORMATS:
        raise CheckpointError(f"{what}: unknown weights format {weights_format!r} (one of "
                              f"{', '.join(WEIGHTS_FORMATS)})")
    file = Path(path).expanduser()
    state, top = read_weights(path, what)
    native = native_module(model)
    if weights_format == "kdlab":
        load_state(model, state, what, path)
        return "kdlab"
    if weights_format == "plain":
        load_state(native, state, what, path)
        return "plain"
    if weights_format != "auto":
        try:
            model.load_state_dict(convert(weights_format, model, state), strict=False)
        except KeyMapError as e:
            raise CheckpointError(f"{what}: weights file {file} does not fit as a {weights_format} checkpoint: {e}") \
                from None
        return weights_format
    if native is not model and not fit_problems(model, state):
        model.load_state_dict(state, strict=False)
        return "kdlab"
    if not fit_problems(native, state):
        native.load_state_dict(state, strict=False)
        return "plain" if native is not model else "kdlab"
    order = _foreign_order(top)
    for fmt in order:
        try:
            model.load_state_dict(convert(fmt, model, state), strict=False)
            return fmt
        except RefusedModel as e:
            raise CheckpointError(f"{what}: weights file {file} is a {fmt} checkpoint kdlab cannot load: {e}") \
                from None
        except KeyMapError:
            continue
    # none fits: the problems of the foreign format the file comes closest to, if it gives the model most of its
    # tensors (a file of another depth or width, or cut short), else those in the model's own key names
    closest = max(order, key=lambda fmt: placed(fmt, model, state))
    filled = placed(closest, model, state)
    if 2 * filled >= _tensors(model) and filled > max(_own_fit(model, state), _own_fit(native, state)):
        try:
            convert(closest, model, state)
        except KeyMapError as e:
            raise CheckpointError(f"{what}: weights file {file} fits the model in no format (weights_format: auto); "
                                  f"closest, {closest}: {e}") from None
    load_state(native, state, what, path)  # raises with the problems in the model's own key names
    return "plain"


def _foreign_order(top: frozenset[str]) -> list[str]:
    # torchdistill's save_ckpt writes these beside the model; RepDistiller's and mdistiller's files look alike
    first = ["torchdistill"] if {"args", "lr_scheduler", "best_value"} <= top else []
    return first + [f for f in FOREIGN_FORMATS if f not in first]


def _tensors(module: nn.Module) -> int:
    return sum(1 for k in module.state_dict() if not k.endswith("num_batches_tracked"))


def _own_fit(module: nn.Module, state: Mapping[str, torch.Tensor]) -> int:
    # the tensors of module that state fills in its own key names, with their shapes (counters aside)
    return sum(1 for k, v in module.state_dict().items()
               if not k.endswith("num_batches_tracked") and k in state and state[k].shape == v.shape)
