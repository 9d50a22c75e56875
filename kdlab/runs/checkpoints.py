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
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdlab.core import log
from kdlab.core.checkpoint import atomic_write, fsync_dir, load_checkpoint, save_checkpoint
from kdlab.core.errors import CheckpointError
from kdlab.core.version import __version__
from kdlab.runs.folder import RunFolder, checkpoint_config_differences


def copy_atomic(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically, with bytes of its own: a damaged file never takes another
    checkpoint down with it (as a hard link between best.pt and last.pt would)."""
    atomic_write(dst, lambda f: _copy_into(src, f), what=f"checkpoint {dst}")


def _copy_into(src: Path, out) -> None:
    with open(src, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 20)


def load_resumable(last: Path, device: torch.device, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """``last.pt``, or the checkpoint before it (``prev.pt``) when ``last.pt`` is missing, truncated, corrupted or
    from another run (its saved config differs from the run's own in ``meta``)."""
    prev = last.with_name(RunFolder(".").checkpoint("prev").name)
    try:
        if not last.exists():
            raise CheckpointError(f"{last} is missing")
        return _own(load_checkpoint(last, map_location=device), last, meta)
    except CheckpointError as e:
        if not prev.exists():
            raise
        ck = _own(load_checkpoint(prev, map_location=device), prev, meta)
        log.warning(f"kdlab: {e}; resuming from the previous checkpoint {prev} (epoch {ck['epoch']})")
        return ck


def _own(ck: dict[str, Any], path: Path, meta: dict[str, Any] | None) -> dict[str, Any]:
    """``ck`` if it was written by the run described by ``meta`` (its config and data fingerprint): a checkpoint
    copied over from another run, another seed say, or training data replaced since, would otherwise be resumed
    and reported as this run."""
    meta = meta or {}
    data, saved_data = meta.get("data_fingerprint"), ck.get("data_fingerprint")
    if data is not None and saved_data is not None and data != saved_data:
        raise CheckpointError(f"{path} was trained on other data than the run's data set holds now (fingerprint "
                              f"{saved_data} -> {data}): the data changed since; restore it, or delete the run "
                              "folder to train anew on the new data")
    config, saved = meta.get("config"), ck.get("config")
    if config is None or not isinstance(saved, dict):
        return ck
    diff = checkpoint_config_differences(saved, config)
    if diff:
        raise CheckpointError(f"{path} belongs to another run ({diff[0]}); restore this run's own checkpoint or "
                              "delete it to train the run anew")
    return ck


def resume(last_path: Path | None, model: nn.Module, objective: nn.Module, opt: torch.optim.Optimizer,
           device: torch.device, meta: dict[str, Any] | None = None) -> tuple[int, list, dict]:
    """(start epoch, history, best) of the checkpoint at ``last_path`` (or the one before it), its state loaded;
    a fresh start without either.  ``meta``: the run's config and data fingerprint, which the checkpoint's must
    match."""
    prev = last_path.with_name(RunFolder(".").checkpoint("prev").name) if last_path is not None else None
    if last_path is None or not (last_path.exists() or prev.exists()):
        return 0, [], {"epoch": 0, "test_top1": -math.inf}
    ck = load_resumable(last_path, device, meta)
    model.load_state_dict(ck["model_state"])
    objective.load_state_dict(ck["objective_state"])
    opt.load_state_dict(ck["optimizer_state"])
    return int(ck["epoch"]), list(ck["history"]), dict(ck["best"])


def save_epoch(run_dir: Path, model: nn.Module, objective: nn.Module, opt: torch.optim.Optimizer, epoch: int,
               best: dict, history: list, meta: dict | None, seed: int, is_best: bool, save_every: int) -> None:
    folder = RunFolder(run_dir)
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
    last, staged = folder.checkpoint("last"), folder.staging_file
    save_checkpoint(staged, payload, name=last)  # an error names last.pt, not the staging file
    try:
        # best / epoch_XXX before last.pt moves on: a kill in between leaves last.pt at the previous epoch, and
        # the resumed run redoes this epoch and writes them again (identically), so none is ever missing
        if is_best:
            copy_atomic(staged, folder.checkpoint("best"))
        if save_every and epoch % save_every == 0:
            copy_atomic(staged, folder.epoch_checkpoint(epoch))
    except Exception:  # e.g. the disk filled up: leave no staged copy behind (last.pt stays the previous epoch)
        staged.unlink(missing_ok=True)
        raise
    if last.exists():  # the previous checkpoint becomes prev.pt, the fallback if the new one turns out damaged;
        # a kill before the next line leaves prev.pt alone, and resume uses it
        os.replace(last, folder.checkpoint("prev"))
    os.replace(staged, last)
    fsync_dir(folder.checkpoint_dir)


__all__ = ["RunCheckpoints", "copy_atomic", "load_resumable", "resume", "save_epoch"]


class RunCheckpoints:
    """The engine's :class:`~kdlab.engine.store.RunStore` for a run folder: resume from its checkpoints, save each
    epoch's, log into its metrics file."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.folder = RunFolder(run_dir)
        self.path = self.folder.path
        self.metrics_file = self.folder.metrics_file
        self.tensorboard_dir = self.folder.tensorboard_dir

    def resume(self, model: nn.Module, objective: nn.Module, opt: torch.optim.Optimizer, device: torch.device,
               meta: dict[str, Any] | None) -> tuple[int, list, dict]:
        return resume(self.folder.checkpoint("last"), model, objective, opt, device, meta)

    def save_epoch(self, model: nn.Module, objective: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                   best: dict, history: list, meta: dict | None, seed: int, is_best: bool, save_every: int) -> None:
        save_epoch(self.path, model, objective, opt, epoch, best, history, meta, seed, is_best, save_every)

    def last_checkpoint(self) -> Path:
        return self.folder.checkpoint("last")
