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
    seed: int = 0  # the run's seed
    display: str = "off"  # how stages inside a step show progress (train.progress; off on ranks > 0)
    desc: str = ""  # the run's name in progress lines

    def generator(self, purpose: int, device: torch.device | str | None = None) -> torch.Generator:
        """A generator seeded from (seed, step, purpose): the same in every process and on resume, whatever else
        drew random numbers before (for draws made for the whole global batch, e.g. CRD's negatives)."""
        from kdlab.core.device import derive_seed

        dev = torch.device(device) if device is not None else self.device
        return torch.Generator(device=dev).manual_seed(derive_seed(self.seed, self.step, purpose))

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return (self.epoch + (self.step % max(self.steps_per_epoch, 1)) / max(self.steps_per_epoch, 1)) / self.epochs
