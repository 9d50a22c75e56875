"""Load a local state-dict file (torchvision's format: a plain mapping of parameter names to tensors) into a model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError


def first_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def load_weights(module: nn.Module, path: str, what: str) -> None:
    """Load ``path`` into ``module`` strictly; any problem is a one-line :class:`CheckpointError` about ``what``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{what}: weights file {file} not found")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{what}: cannot read weights file {file}: {first_line(e)}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what}: {file} is not a state dict (a mapping of parameter names to tensors)")
    own = module.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
    for k, v in own.items():
        if k in state and state[k].shape != v.shape:
            problems.append(f"{k} has shape {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model")
            break
    if problems:
        raise CheckpointError(f"{what}: weights file {file} does not fit the model: " + "; ".join(problems))
    module.load_state_dict(state)
