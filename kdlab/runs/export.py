"""A run's model outside kdlab: :func:`load_model` in Python, :func:`export_model` (``kdlab export``) as a file.

A kdlab checkpoint opens with plain ``torch.load`` too, but it is a training checkpoint: the model's state sits
under ``model_state`` beside the optimizer's, in the key names of kdlab's wrappers (``net.`` for a model of the
``module`` adapter).  What is exported is the model of the user's own code
(:func:`kdlab.models._weights.native_module`):

* the ``module`` adapter: the user's ``nn.Module`` itself (its own state-dict keys);
* the ``torchvision`` adapter, ``imagenet_resnet*``, ``ResNet50``: the torchvision model (torchvision's keys, so
  the file loads into ``torchvision.models.resnet18(num_classes=...)`` and the like);
* kdlab's other models: the kdlab model (build it with ``kdlab.models.build_model`` to load the state dict).

Formats: ``state_dict`` (``torch.save`` of that model's state dict: ``model.load_state_dict(torch.load(file))``),
``safetensors`` (the same tensors; ``safetensors.torch.load_file``), ``torchscript`` (``torch.jit.trace`` on a
sample batch of the data's shape: ``torch.jit.load(file)(x)``, no Python class needed) and ``onnx``
(``torch.onnx.export`` with a dynamic batch size; needs the ``onnx`` and ``onnxscript`` packages).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field

from kdlab.config import load_config
from kdlab.config.schema import Strict
from kdlab.core.checkpoint import atomic_write, atomic_write_bytes
from kdlab.core.device import resolve_device
from kdlab.core.errors import KdlabError
from kdlab.core.log import logger
from kdlab.models._weights import first_line
from kdlab.models.native import native_module
from kdlab.runs.folder import RunFolder
from kdlab.runs.resolve import checkpoint_model, resolve_checkpoint

Format = Literal["state_dict", "torchscript", "onnx", "safetensors"]
SUFFIX = {"state_dict": ".pt", "torchscript": ".torchscript.pt", "onnx": ".onnx", "safetensors": ".safetensors"}
SAMPLE_BATCH = 2  # torch.export takes a batch of 1 for a constant size; tracing is indifferent


class ExportError(KdlabError):
    """The model cannot be written in the requested format (a missing package, a model the tracer rejects)."""


class ExportConfig(Strict):
    """``kdlab export``: write a run's model in a format that needs no kdlab to load."""

    path: str = Field(description="run folder or checkpoint file")
    checkpoint: str = Field("last", description="last | best | epoch_XXX (ignored when path is a file)")
    format: Format = "state_dict"
    out: str | None = Field(None, description="file to write (default: <run folder>/export/<checkpoint><suffix>)")


def load_model(run_or_checkpoint: str | os.PathLike, checkpoint: str = "last",
               device: str | torch.device = "cpu") -> nn.Module:
    """The model of a kdlab run (a run folder, or a checkpoint file) in evaluation mode on ``device``.

    ``checkpoint``: ``last`` (the final model, the one ``summary.json`` reports), ``best`` or ``epoch_XXX``.  The
    model is the one of the user's own code: for a ``module`` adapter run the user's ``nn.Module`` itself, for the
    torchvision adapter (and ``imagenet_resnet*``) the torchvision model, else kdlab's model; ``model(x)`` gives
    the logits.  The checkpoint's checksums are verified; its optimizer state is not read."""
    dev = torch.device(resolve_device(device) if isinstance(device, str) else device)
    path = resolve_checkpoint(str(run_or_checkpoint), checkpoint)
    model, _ = checkpoint_model(path, None, torch.device("cpu"), role="exported")
    return native_module(model).to(dev).eval()


def _default_out(path: Path, fmt: str) -> Path:
    # beside the run's folder, not inside checkpoints/: a .pt file there would be listed (and loaded) as a checkpoint
    folder = path.parent.parent if path.parent.name == RunFolder(".").checkpoint_dir.name else path.parent
    return folder / "export" / f"{path.stem}{SUFFIX[fmt]}"


def export_model(run_or_checkpoint: str | os.PathLike, format: Format = "state_dict", out: str | os.PathLike | None
                 = None, checkpoint: str = "last", overrides: list[str] = ()) -> Path:
    """Write the model of a run (see :func:`load_model`) as ``format``; returns the file written."""
    cfg = load_config(ExportConfig, {"path": str(run_or_checkpoint), "checkpoint": checkpoint, "format": format,
                                     "out": None if out is None else str(out)}, overrides)
    path = resolve_checkpoint(cfg.path, cfg.checkpoint)
    model, ck = checkpoint_model(path, None, torch.device("cpu"), role="exported")
    native = native_module(model).eval()
    target = Path(cfg.out) if cfg.out else _default_out(path, cfg.format)
    if target.exists() and target.resolve() == path.resolve():
        raise ExportError(f"out: {target} is the checkpoint being exported; choose another file")
    sample = torch.randn(SAMPLE_BATCH, *ck["model"]["input_shape"], generator=torch.Generator().manual_seed(0))
    WRITERS[cfg.format](native, sample, target)
    differ = stock_differences(native, ck["model"])
    if differ:
        logger.info(f"{target}: layers that differ from the stock torchvision model: {differ}")
    return target


def stock_torchvision_arch(spec: dict) -> str | None:
    """The torchvision architecture a model spec stands for (the torchvision adapter, ``imagenet_resnet*``)."""
    if spec.get("name") == "torchvision":
        return spec.get("params", {}).get("arch")
    name = str(spec.get("name", ""))
    return name.removeprefix("imagenet_") if name.startswith("imagenet_resnet") else None


def stock_differences(native: nn.Module, spec: dict) -> str:
    """The tensors of ``native`` whose shape is not the stock torchvision model's (another head, another stem), in
    words; empty when it is the stock model or not a torchvision one."""
    arch = stock_torchvision_arch(spec)
    if arch is None:
        return ""
    from torchvision import models as tvm

    stock = {k: tuple(v.shape) for k, v in tvm.get_model(arch, weights=None).state_dict().items()}
    own = {k: tuple(v.shape) for k, v in native.state_dict().items()}
    out = [f"{k} {list(own[k])} (stock {list(stock[k])})" for k in own if k in stock and own[k] != stock[k]]
    out += [f"{k} (not in the stock model)" for k in own if k not in stock]
    out += [f"{k} (missing)" for k in stock if k not in own]
    return "; ".join(out)


def _write_state_dict(model: nn.Module, _sample: torch.Tensor, target: Path) -> None:
    atomic_write(target, lambda f: torch.save(model.state_dict(), f))


def _write_safetensors(model: nn.Module, _sample: torch.Tensor, target: Path) -> None:
    try:
        from safetensors.torch import save
    except ImportError:
        raise ExportError("format safetensors needs the safetensors package: pip install safetensors") from None
    # safetensors refuses tensors that share memory (tied weights): each key gets its own copy
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(target, save(tensors, metadata={"format": "pt"}))


def _write_torchscript(model: nn.Module, sample: torch.Tensor, target: Path) -> None:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's advice on Python control flow, checked below instead
            traced = torch.jit.trace(model, (sample,), check_trace=False)
            # other inputs than the traced one: a branch on the input's values shows on some of them
            same = all(torch.allclose(traced(x), model(x), rtol=1e-4, atol=1e-5)
                       for x in (sample, -sample, 3 * sample[:1]))
    except Exception as e:  # noqa: BLE001 - whatever the tracer rejects in the user's model
        raise ExportError(f"format torchscript: torch.jit.trace failed: {first_line(e)}") from None
    if not same:
        raise ExportError("format torchscript: the traced module does not reproduce the model's logits (does its "
                          "forward branch on the input's values?); use format state_dict or onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript; it still loads anywhere
        atomic_write(target, lambda f: torch.jit.save(traced, f))


def _write_onnx(model: nn.Module, sample: torch.Tensor, target: Path) -> None:
    missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
    if missing:
        raise ExportError(f"format onnx needs the {' and '.join(missing)} package{'s' * (len(missing) > 1)} "
                          f"(torch's exporter uses them): pip install {' '.join(missing)}")
    batch = torch.export.Dim("batch")
    program, why = None, ""
    # a dynamic batch size where the model allows one, else a graph for one sample at a time
    for args, dynamic in (((sample,), ({0: batch},)), ((sample[:1],), None)):
        try:
            with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(model, args, dynamo=True, input_names=["input"],
                                            output_names=["logits"], dynamic_shapes=dynamic, verbose=False)
            break
        except Exception as e:  # noqa: BLE001 - whatever torch.export rejects in the user's model
            why = first_line(e)
    if program is None:
        raise ExportError(f"format onnx: torch.onnx.export failed: {why}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        program.save(tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


WRITERS = {"state_dict": _write_state_dict, "safetensors": _write_safetensors, "torchscript": _write_torchscript,
           "onnx": _write_onnx}


__all__ = ["ExportConfig", "ExportError", "export_model", "load_model"]
