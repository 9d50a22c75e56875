"""Weights files that kdlab did not write: read a state dict saved by plain PyTorch (torchvision's ``.pth``, a
training script's ``{"state_dict": ...}`` or ``{"model": ..., "optimizer": ..., "args": ...}``, a DataParallel
model's ``module.`` keys) or safetensors, and load it into a model.  ``torch.save`` files are read with
``weights_only=True``: tensors, plain Python values and the few classes of :func:`safe_globals` only, so that
reading a file never runs code from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import torch
import torch.nn as nn

from kdlab.core.errors import CheckpointError
from kdlab.models.hub import local_weights

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts commonly nest the weights


_PARALLEL_PREFIX = "module."


def first_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _is_state(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


@cache
def safe_globals() -> tuple:
    """The classes besides tensors that kdlab unpickles from a weights file: what the training scripts of
    RepDistiller, mdistiller and torchdistill save beside the weights (NumPy scalars and their dtypes in an
    optimizer's state, an ``argparse.Namespace`` of arguments).  Nothing of them runs code on loading."""
    import argparse

    import numpy as np

    try:  # NumPy 2 moved the scalar reconstructor; files written under NumPy 1 still name numpy.core
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import scalar
    # a scalar is rebuilt from its dtype, an instance of a class per dtype (numpy.dtypes.Float64DType ...)
    dtypes = {type(np.dtype(c)) for c in "?bhilqBHILQefdg"}
    return (scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            *sorted((t for t in dtypes if t is not np.dtype), key=str), argparse.Namespace)


def _torch_load(file: Path, what: str) -> object:
    try:
        with torch.serialization.safe_globals(list(safe_globals())):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        # weights_only refuses other pickled classes, so that loading a file never runs code from it
        if "Weights only" in str(e):
            found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
            held = f"a pickled {found[1]}" if found else "pickled Python objects"
            why = (f"it holds {held}, which kdlab does not unpickle (it reads tensors, numbers, NumPy scalars and "
                   "argparse.Namespace); a whole model? save model.state_dict() instead")
        else:
            why = first_line(e)
        raise CheckpointError(f"{what}: cannot read weights file {file}: {why}") from None


def read_weights(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], frozenset[str]]:
    """The state dict in ``path`` as :func:`read_state_dict` reads it, and the keys of the dict the file holds at
    its top (a training script's ``epoch``, ``optimizer``, ``args`` ...; empty for a bare state dict)."""
    file = local_weights(path, what)  # a plain path as it is; an hf-hub: file from (or fetched into) the HF cache
    if not file.is_file():
        raise CheckpointError(f"{what}: weights file {file} not found")
    with open(file, "rb") as f:
        head = f.read(9)
    # a safetensors file starts with its JSON header's length, then the header; torch.save writes a zip file
    if file.suffix == ".safetensors" or (head[8:] == b"{" and int.from_bytes(head[:8], "little") < 2 ** 32):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{what}: {file} is a safetensors file; pip install safetensors to read it") \
                from None
        try:
            state: object = load_file(str(file), device="cpu")
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
            raise CheckpointError(f"{what}: cannot read weights file {file}: {first_line(e)}") from None
    else:
        state = _torch_load(file, what)
    if isinstance(state, Mapping) and str(state.get("format", "")).startswith("kdlab-checkpoint"):
        raise CheckpointError(f"{what}: {file} is a kdlab checkpoint, not a weights file: give it as teacher.path "
                              "(kdlab rebuilds its model and verifies it), or kdlab export it to a state dict")
    top = frozenset(str(k) for k in state) if isinstance(state, Mapping) and not _is_state(state) else frozenset()
    while isinstance(state, Mapping) and not _is_state(state):
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not _is_state(state):
        raise CheckpointError(f"{what}: {file} is not a state dict (a mapping of parameter names to tensors, or a "
                              f"dict holding one under {' / '.join(repr(k) for k in WRAPPER_KEYS)})")
    if all(k.startswith(_PARALLEL_PREFIX) for k in state):
        state = {k[len(_PARALLEL_PREFIX):]: v for k, v in state.items()}
    return dict(state), top


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (torch.save or safetensors), unwrapped from a ``state_dict`` / ``model`` key and
    without DataParallel's ``module.`` prefix; any problem is a one-line :class:`CheckpointError` about ``what``.

    A ``torch.save`` file is read with ``weights_only=True``: besides tensors and plain Python values it may hold
    only the classes of :func:`safe_globals`; a file with any other pickled class is refused."""
    return read_weights(path, what)[0]


def _optional(key: str) -> bool:
    # batch norm fills in a missing counter itself (state dicts saved before it existed, e.g. old torchvision files)
    return key.endswith("num_batches_tracked")


def fit_problems(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Why ``state`` cannot be loaded strictly into ``module`` (empty: it can), first offending keys named."""
    own = module.state_dict()
    problems = []
    missing = [k for k in own if k not in state and not _optional(k)]
    unexpected = [k for k in state if k not in own]
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
    for k, v in own.items():
        if k in state and state[k].shape != v.shape:
            problems.append(f"{k} has shape {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model")
            break
    return problems


def load_state(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, file: str | Path) -> None:
    problems = fit_problems(module, state)
    if problems:
        raise CheckpointError(f"{what}: weights file {Path(file).expanduser()} does not fit the model: "
                              + "; ".join(problems))
    module.load_state_dict(state, strict=False)  # strict up to the batch-norm counters fit_problems allows


def load_weights_file(module: nn.Module, path: str | Path, what: str) -> None:
    """Load the state dict in ``path`` into ``module`` strictly; any problem is a one-line CheckpointError."""
    load_state(module, read_state_dict(path, what), what, path)
