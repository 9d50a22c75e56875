"""Library weights a config opts into with ``pretrained``: torchvision's weight enums here (timm's tags in
:mod:`kdlab.models.timm_adapter`), and the parameter declarations and checks the adapters share.

    model: {name: torchvision, arch: resnet18, pretrained: IMAGENET1K_V1}   # or DEFAULT, true, ResNet18_Weights.X
    model: {name: imagenet_resnet50, pretrained: DEFAULT}

A tag is checked against torchvision's enum for the architecture when the config is read (a wrong one is an error
naming ``pretrained`` and listing the valid tags) and written into the resolved config as the enum member it
stands for (``DEFAULT`` -> ``IMAGENET1K_V1``), so a run records which weights it started from.  torchvision fetches
the file into its cache (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``) the first
time; after that nothing is fetched.  The model is the one torchvision builds for those weights (e.g. inception's
and googlenet's input transform on, googlenet's auxiliary heads dropped).  When the data set's class count differs
from the weights' (1000 for ImageNet), the classifier is new (torchvision's initialisation for the data's class
count) and a log line says so; every other tensor is the released one.  ``weights`` (a file) and ``pretrained``
are exclusive.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlparse

import torch
import torch.nn as nn
from pydantic import BaseModel, Field
from pydantic_core import PydanticCustomError, ValidationError

from kdlab.core.errors import CheckpointError
from kdlab.core.log import logger
from kdlab.core.registry import hint

if TYPE_CHECKING:  # torchvision is imported when weights are asked for, not when kdlab starts
    from torchvision.models import WeightsEnum

#: the ``weights`` parameter of the adapters and the presets built on library models
WeightsFile = Annotated[str | None, Field(description="a state-dict file (.pth/.safetensors) in the model's own key "
                                                      "names, or hf-hub:ORG/REPO/FILE[@REVISION] (fetched into the "
                                                      "Hugging Face cache)")]
#: torchvision's ``pretrained`` parameter
TorchvisionTag = Annotated[bool | str | None, Field(description="torchvision's released weights: a tag of the "
                                                                "arch's weight enum (IMAGENET1K_V1, DEFAULT; true "
                                                                "= DEFAULT), fetched into TORCH_HOME's cache")]


def param_error(params: BaseModel | type[BaseModel], key: str, message: str, value: Any) -> ValidationError:
    """A validation error of one parameter, raised from a builder's ``resolve_params`` (it names ``key``)."""
    title = params.__name__ if isinstance(params, type) else type(params).__name__
    return ValidationError.from_exception_data(title, [{"type": PydanticCustomError("kdlab_param", "{msg}",
                                                                                    {"msg": message}),
                                                        "loc": (key,), "input": value}])


BOTH = "give weights (a file) or pretrained (the library's weights), not both"


def _weights_enum(arch: str) -> type[WeightsEnum] | None:
    from torchvision import models as tvm

    try:
        return tvm.get_model_weights(arch)
    except (ValueError, KeyError):
        return None


def torchvision_tag(arch: str, pretrained: bool | str) -> str:
    """The member name of torchvision's weight enum for ``arch`` that ``pretrained`` stands for (``true`` and
    ``DEFAULT``: the default weights); a ValueError lists the valid tags."""
    enum = _weights_enum(arch)
    if enum is None or not enum.__members__:
        raise ValueError(f"torchvision has no released weights for {arch!r}")
    valid = list(enum.__members__)
    tag = "DEFAULT" if pretrained is True else str(pretrained)
    owner, dot, member = tag.rpartition(".")
    if dot and owner != enum.__name__:
        raise ValueError(f"{tag!r} names weights of another model: {arch}'s are {enum.__name__} "
                         f"({', '.join(valid)})")
    if member not in enum.__members__:
        h = hint(member, valid)
        raise ValueError(f"not a weights tag of torchvision's {arch} (valid: {', '.join(valid)})"
                         + (f"; {h}" if h else ""))
    return enum[member].name


def resolve_torchvision(params: BaseModel, arch: str) -> BaseModel:
    """``resolve_params`` of a torchvision-built model: ``weights`` and ``pretrained`` exclusive, the tag checked
    and written as the enum member it stands for (no ``pretrained``: None)."""
    pretrained = getattr(params, "pretrained", None)
    if pretrained is None or pretrained is False:
        return params.model_copy(update={"pretrained": None})
    if getattr(params, "weights", None) is not None:
        raise param_error(params, "pretrained", BOTH, pretrained)
    try:
        tag = torchvision_tag(arch, pretrained)
    except ValueError as e:
        raise param_error(params, "pretrained", str(e), pretrained) from None
    return params.model_copy(update={"pretrained": tag})


def _cached_file(url: str) -> Path:
    # where torch.hub.load_state_dict_from_url keeps a download (torchvision passes no model_dir)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def torchvision_pretrained(net: nn.Module, arch: str, pretrained: bool | str, kwargs: dict[str, Any],
                           what: str) -> nn.Module:
    """torchvision's model of ``arch`` with its released weights ``pretrained``, built as torchvision builds it for
    those weights (inception's input transform, googlenet without its auxiliary heads); where the data's class count
    differs from the weights', its classifier is the one of ``net`` (``arch`` built by torchvision with ``kwargs``
    for the data's class count).  torchvision fetches the file into its cache when it is not there; failures are
    one-line CheckpointErrors, a wrong tag a ValueError naming ``pretrained``."""
    from torchvision import models as tvm

    try:
        tag = torchvision_tag(arch, pretrained)
    except ValueError as e:
        raise ValueError(f"pretrained: {e}") from None
    weights = tvm.get_model_weights(arch)[tag]
    name = f"{type(weights).__name__}.{tag}"
    cached = _cached_file(weights.url)
    if not cached.is_file():
        logger.info(f"{what}: fetching {name} from {weights.url} into {cached.parent}")
    try:
        # torchvision's own builder: it knows each model's quirks (densenet's old key names, inception's inputs)
        released = tvm.get_model(arch, weights=weights, progress=False, **kwargs)
    except (ValueError, TypeError):
        raise
    except Exception as e:  # noqa: BLE001 - network, hash and unreadable-file errors end the same way
        lines = str(e).strip().splitlines()
        why = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
        raise CheckpointError(f"{what}: cannot load torchvision's {name} ({weights.url}): {why}; without a network, "
                              f"put the file in {cached.parent} or give a weights file") from None
    state, own = released.state_dict(), net.state_dict()
    head = sorted(k for k in own if k in state and own[k].shape != state[k].shape)
    if head:
        prefix = head[0].rpartition(".")[0]
        module = net.get_submodule(prefix)
        # only the classifier may differ: a linear layer with the data's class count and the weights' inputs
        if not (isinstance(module, nn.Linear) and all(k.rpartition(".")[0] == prefix for k in head)
                and state[f"{prefix}.weight"].shape[1] == module.in_features):
            raise CheckpointError(f"{what}: torchvision's {name} does not fit the model ({head[0]} has shape "
                                  f"{tuple(state[head[0]].shape)} in the weights, {tuple(own[head[0]].shape)} in the "
                                  "model)")
        classes = len(weights.meta.get("categories") or ()) or state[f"{prefix}.weight"].shape[0]
        logger.info(f"{what}: {name} was trained on {classes} classes, the data have {module.out_features}: the "
                    f"classifier {prefix} is new, the rest is {name}")
        released.set_submodule(prefix, module)
    return released
