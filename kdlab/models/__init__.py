"""Model registry and construction.  Every model honours the feature contract in :mod:`kdlab.models.contract`."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from kdlab.core.errors import ConfigError
from kdlab.core.registry import MODELS
from kdlab.models.contract import ContractModel, Features

__all__ = ["ContractModel", "Features", "build_model", "count_parameters"]


def build_model(name: str, params: dict[str, Any], num_classes: int, input_shape: tuple[int, ...],
                key: str = "model") -> nn.Module:
    """Build a registered model for a data set's class count and input shape.

    The result remembers how it was built in ``model.kdlab_spec`` so checkpoints can rebuild it.
    """
    entry = MODELS.get(name)
    kind = {3: "image", 2: "sequence"}.get(len(input_shape), "vector")
    wants = entry.meta.get("input", "any")
    if wants != "any" and wants != kind:
        raise ConfigError(f"{key}.name: model {name!r} takes {wants} inputs but the data are {kind}s of shape "
                          f"{tuple(input_shape)}")
    try:
        model = entry.build(params, num_classes=num_classes, in_channels=input_shape[0],
                            input_shape=tuple(input_shape))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{key}: cannot build {name!r}: {e}") from None
    model.kdlab_spec = {"name": name, "params": dict(params), "num_classes": num_classes,
                        "input_shape": list(input_shape)}
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
