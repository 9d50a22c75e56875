"""Device choice and seeding."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

from kdlab.core.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available (use auto or cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device: 'mps' requested but MPS is not available (use auto or cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    seed = int(seed) % (2**63 - 1)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """``train.deterministic``: what repeats exactly.

    * ``true`` (default): deterministic kernels where PyTorch has them (a warning names an operation that has
      none), cuDNN autotuning off, cuBLAS with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, which must be set
      before the process's first cuBLAS call: kdlab sets it at the start of every run, before the teacher is
      loaded).  A run repeats bit for bit on the same machine, software and thread count, and a resumed run ends
      with exactly the weights of an uninterrupted one (on the CPU always; on CUDA for every operation with a
      deterministic kernel).
    * ``false``: cuDNN autotuning (``cudnn.benchmark``) picks the fastest kernels for each shape and
      non-deterministic kernels are allowed: faster on GPUs, but two runs (and a resumed run) may differ in the
      last bits, which training can amplify.  Nothing changes on the CPU but the allowed kernels.
    """
    if enabled:
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.cuda.is_available() and torch.cuda.is_initialized():
            import warnings

            warnings.warn("train.deterministic: CUDA was used before kdlab could set CUBLAS_WORKSPACE_CONFIG; set it "
                          "(e.g. :4096:8) before any CUDA work for deterministic cuBLAS", stacklevel=2)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms also imports torch._inductor.config (4 s of a CPU run's start) to set a
    # flag only torch.compile reads: set it only where inductor is loaded, and compile_deterministic() after compile
    torch._C._set_deterministic_algorithms(enabled, warn_only=True)
    compile_deterministic(only_if_loaded=True)
    torch.backends.cudnn.benchmark = not enabled


def compile_deterministic(only_if_loaded: bool = False) -> None:
    """Give torch.compile (inductor) the deterministic setting of the process."""
    if only_if_loaded and "torch._inductor.config" not in sys.modules:
        return
    import torch._inductor.config as inductor_config

    inductor_config.deterministic = torch.are_deterministic_algorithms_enabled()


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (e.g. run seed, epoch, purpose), the same in every process."""
    h = 1469598103934665603
    for p in parts:
        h ^= (int(p) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF
