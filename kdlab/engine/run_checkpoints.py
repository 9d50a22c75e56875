"""A run's checkpoints: where they live, how an epoch's is saved and how a run resumes from the last one.

``checkpoints/last.pt`` is the resume point, ``prev.pt`` the one before it (the fallback when ``last.pt`` is
damaged), ``best.pt`` the best test top-1 so far and ``epoch_XXX.pt`` every ``save_every`` epochs.  Each is
written to a staging file first and moved into place, ``last.pt`` last: a kill at any moment leaves a checkpoint
to resume from and loses no epoch checkpoint.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .. import __version__
from ..errors import CheckpointError
from .checkpoint import load_checkpoint, save_checkpoint


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s bytes atomically (a hard link when the file system allows)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load_resumable(last: Path, device: torch.device) -> dict[str, Any]:
    """``last.pt``, or the checkpoint before it when ``last.pt`` is truncated or corrupted."""
    try:
        return load_checkpoint(last, map_location=device)
    except CheckpointError as e:
        prev = last.with_name("prev.pt")
        if not prev.exists():
            raise
        ck = load_checkpoint(prev, map_location=device)
        print(f"kdlab: {e}; resuming from the previous checkpoint {prev} (epoch {ck['epoch']})", file=sys.stderr,
              flush=True)
        return ck


def resume(last_path: Path | None, model: nn.Module, objective: nn.Module, opt: torch.optim.Optimizer,
           device: torch.device) -> tuple[int, list, dict]:
    """(start epoch, history, best) of the checkpoint at ``last_path``, its state loaded; a fresh start without."""
    if last_path is None or not last_path.exists():
        return 0, [], {"epoch": 0, "test_top1": -math.inf}
    ck = load_resumable(last_path, device)
    model.load_state_dict(ck["model_state"])
    objective.load_state_dict(ck["objective_state"])
    opt.load_state_dict(ck["optimizer_state"])
    return int(ck["epoch"]), list(ck["history"]), dict(ck["best"])


def save_epoch(run_dir: Path, model: nn.Module, objective: nn.Module, opt: torch.optim.Optimizer, epoch: int,
               best: dict, history: list, meta: dict | None, seed: int, is_best: bool, save_every: int) -> None:
    ck_dir = checkpoint_dir(run_dir)
    payload = {
        "kdlab_version": __version__,
        "model": getattr(model, "kdlab_spec", None),
        "model_state": model.state_dict(),
        "objective_state": objective.state_dict(),
        "optimizer_state": opt.state_dict(),
        "epoch": epoch,
        "best": best,
        "history": history,
        "seed": seed,
        **(meta or {}),
    }
    last, staged = ck_dir / "last.pt", ck_dir / ".next.ckpt"  # not *.pt: never listed as a checkpoint
    save_checkpoint(staged, payload)
    # best / epoch_XXX before last.pt moves on: a kill in between leaves last.pt at the previous epoch, and the
    # resumed run redoes this epoch and writes them again (identically), so none is ever missing
    if is_best:
        link_or_copy(staged, ck_dir / "best.pt")
    if save_every and epoch % save_every == 0:
        link_or_copy(staged, ck_dir / f"epoch_{epoch:03d}.pt")
    if last.exists():  # keep the previous checkpoint: the fallback if the new one turns out corrupted
        link_or_copy(last, ck_dir / "prev.pt")
    os.replace(staged, last)


__all__ = ["checkpoint_dir", "link_or_copy", "load_resumable", "resume", "save_epoch"]
