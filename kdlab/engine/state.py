"""What the training loop tells objectives about where it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class LoopState:
    epoch: int  # 0-based epoch being trained (or just finished, in on_epoch_end)
    epochs: int
    step: int  # global optimisation step
    steps_per_epoch: int
    num_train: int
    num_classes: int
    device: torch.device
    run_dir: Path | None = None
    train_loader: Any = None  # for objectives with an initialisation stage over the training data
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return (self.epoch + (self.step % max(self.steps_per_epoch, 1)) / max(self.steps_per_epoch, 1)) / self.epochs
