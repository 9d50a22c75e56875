"""Learning-rate schedules as pure functions of the (fractional) epoch: nothing to save, exact on resume."""

from __future__ import annotations

import bisect
import math

from kdlab.config.schema import ScheduleConfig


def lr_at(cfg: ScheduleConfig, base_lr: float, epoch: float, epochs: int) -> float:
    """Learning rate at fractional epoch ``epoch``.

    During the linear warm-up the loop calls this once per step with ``epoch = e + (i + 1) / steps``, so the rate
    reaches ``base_lr`` exactly at the end of the warm-up.
    """
    if epoch < cfg.warmup_epochs:
        return base_lr * epoch / cfg.warmup_epochs
    e = int(epoch)
    if cfg.name == "multistep":
        return base_lr * cfg.gamma ** bisect.bisect_right(cfg.milestones, e)
    if cfg.name == "cosine":
        span = max(epochs - cfg.warmup_epochs, 1)
        t = min(max(e - cfg.warmup_epochs, 0) / span, 1.0)
        return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
    return base_lr
