"""Shared timing helpers of the step-time benchmarks: alternate blocks of steps, ratio of medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from kdlab.core.state import LoopState


def loop_state(num_train: int, classes: int, epoch: int = 5) -> LoopState:
    return LoopState(epoch=epoch, epochs=240, step=0, steps_per_epoch=100, num_train=num_train,
                     num_classes=classes, device=torch.device("cpu"))


def step_timer(model, objective, opt, batch, state) -> Callable[[int], float]:
    """A function running ``n`` training steps and returning the seconds per step."""
    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            out = objective(model, batch, state)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / n

    return run


def alternate(a: Callable[[int], float], b: Callable[[int], float], steps: int, blocks: int) -> tuple[float, float]:
    """Median seconds per step of ``a`` and ``b``, measured in alternating blocks after a warm-up."""
    a(2)
    b(2)
    ta, tb = [], []
    for _ in range(blocks):
        ta.append(a(steps))
        tb.append(b(steps))
    return statistics.median(ta), statistics.median(tb)
