"""What the loop needs of the place a run keeps its files, as an interface: the engine names no file and knows no
run folder.  :class:`kdlab.runs.checkpoints.RunCheckpoints` implements it for a run folder (its checkpoint
policy: staging, ``prev.pt`` fallback, ``best`` / ``epoch_XXX`` copies, ownership checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn


class RunStore(Protocol):
    path: Path  # the run's own folder (the loop state's ``run_dir``: methods keep caches there)
    metrics_file: Path  # one JSON line per epoch
    tensorboard_dir: Path

    def resume(self, model: nn.Module, objective: nn.Module, opt: torch.optim.Optimizer, device: torch.device,
               meta: dict[str, Any] | None) -> tuple[int, list, dict]:
        """(start epoch, history, best) with the saved state loaded; ``(0, [], no best)`` when nothing is saved."""

    def save_epoch(self, model: nn.Module, objective: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                   best: dict, history: list, meta: dict | None, seed: int, is_best: bool, save_every: int) -> None:
        """Make the state after ``epoch`` the resume point."""

    def last_checkpoint(self) -> Path | None:
        """The resume point's file when there is one (named in messages, e.g. after a divergence)."""
