"""Library weights without a network: a Hugging Face hub cache and a torch.hub cache laid out as the libraries write
them, state dicts that differ from any fresh initialisation, and a guard that records every connection attempt."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import torch
import torch.nn as nn


def hub_snapshot(cache: Path, repo: str, files: dict[str, dict[str, torch.Tensor]], ref: str = "main") -> str:
    """Write ``files`` (name -> state dict; .safetensors or torch.save) into ``cache`` as huggingface_hub lays out a
    model repository's snapshot: ``models--ORG--REPO/refs/REF`` holds the commit, ``snapshots/COMMIT/FILE`` the
    files.  Returns the commit hash."""
    from safetensors.torch import save_file

    commit = hashlib.sha1(f"{repo}@{ref}".encode()).hexdigest()
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    for name, state in files.items():
        path = root / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        else:
            torch.save(state, path)
    return commit


def distinct_state(net: nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    """``net``'s state dict with every float tensor moved off any initialisation (batch-norm variances kept
    positive), so that a model that holds it can only have loaded it."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in net.state_dict().items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = v * (1 + torch.rand(v.shape, generator=g))
        else:
            out[k] = v + 0.05 * torch.randn(v.shape, generator=g)
    return out


def block_network(monkeypatch) -> list:
    """Make every outgoing connection fail; the list returned holds the addresses tried (a test asserts that it
    stays empty)."""
    tried = []

    def refuse(self, address, *args, **kwargs):
        tried.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return tried


def offline_hub_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty Hugging Face cache with HF_HUB_OFFLINE=1 (and the huggingface_hub constant it reads at import)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def torch_hub_cache(tmp_path: Path, monkeypatch) -> tuple[Path, list[str]]:
    """An empty TORCH_HOME; torch.hub's downloader replaced by one that records the URL and fails.  Returns the
    folder and the list of URLs a download was attempted for."""
    from urllib.error import URLError

    import torch.hub

    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    fetched = []

    def download(url, dst, *args, **kwargs):
        fetched.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return home, fetched


def release(home: Path, arch: str, tag: str = "DEFAULT") -> dict[str, torch.Tensor]:
    """A stand-in for torchvision's file of ``arch``'s ``tag`` weights in torch.hub's cache under ``home``."""
    from torchvision import models as tvm

    weights = tvm.get_model_weights(arch)[tag]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = distinct_state(tvm.get_model(arch, weights=None))
    path = home / "hub" / "checkpoints" / Path(weights.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def same(a: dict, b: dict, skip: tuple[str, ...] = ()) -> bool:
    """Whether ``a`` holds exactly ``b``'s tensors (keys starting with ``skip`` and BN counters aside)."""
    keys = [k for k in b if not k.startswith(skip) and not k.endswith("num_batches_tracked")]
    return bool(keys) and all(torch.equal(a[k], b[k]) for k in keys)
