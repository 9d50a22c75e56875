"""Where a run's epoch records go: the store's metrics file (one JSON line per epoch), TensorBoard when installed,
and the run's hooks.

TensorBoard groups scalars by the part of the tag before its first ``/``, so each record key is logged under a
group (:func:`tensorboard_tag`): ``test/top1``, ``test/nll`` for the evaluation (``val/top1``, ``val/nll`` on a
validation split), ``train/loss``, ``train/top1``,
``train/lr`` and the loss's parts (``train/ce``, ``train/kd``, ...) for training, ``time/train_seconds``; the
x-axis is the epoch.  With ``train.tensorboard_every_step`` the training loop also logs each optimisation step's
loss, parts and learning rate under ``step/`` (x-axis: the global step), for a curve within an epoch; it costs
a device synchronisation per step, so it is off by default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdlab.core.checkpoint import atomic_write_text
from kdlab.engine.store import RunStore

EpochHook = Callable[[int, dict[str, Any]], None]

# record keys whose group or name is not their prefix: "acc" is the training accuracy, "train_time" seconds
TAGS = {"acc": "train/top1", "lr": "train/lr", "loss": "train/loss", "train_time": "time/train_seconds"}


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of an epoch record's key: ``test_top1`` -> ``test/top1``; an objective's own test
    measures (SFTN's ``branch1_top1``) -> ``test/branch1_top1``; any other key, a part of the training loss,
    -> ``train/<key>``."""
    if key in TAGS:
        return TAGS[key]
    if key.startswith("test_"):
        return "test/" + key[len("test_"):]
    if key.startswith("val_"):  # the validation split's (data.val_fraction), not a test measure
        return "val/" + key[len("val_"):]
    if key.endswith("_top1"):
        return "test/" + key
    return "train/" + key


class MetricSink:
    """The epoch log of one run (nothing is written without a store, or on processes other than rank 0)."""

    def __init__(self, store: RunStore | None, writes: bool, tensorboard: bool, history: list[dict[str, Any]],
                 hooks: list[EpochHook] = (), every_step: bool = False):
        self.store, self.writes, self.hooks = store, writes and store is not None, list(hooks)
        self.writer = None
        self.every_step = every_step
        if self.writes:
            store.path.mkdir(parents=True, exist_ok=True)
            # drop log lines of an epoch that was interrupted before its checkpoint
            atomic_write_text(store.metrics_file, "".join(json.dumps(h) + "\n" for h in history))
            if tensorboard:
                # a resumed run hides the events an interrupted process logged past its last checkpoint
                self.writer = _tensorboard(store.tensorboard_dir, purge_step=len(history) + 1)
        self.step_writer = None

    def write(self, rec: dict[str, Any]) -> None:
        """The record on disk (before the epoch's checkpoint, which makes it final)."""
        if not self.writes:
            return
        with open(self.store.metrics_file, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.writer is not None:
            for k, v in rec.items():
                if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool):
                    self.writer.add_scalar(tensorboard_tag(k), v, rec["epoch"])

    @property
    def logs_steps(self) -> bool:
        """Whether :meth:`write_step` logs anything (the loop need not read the step's loss otherwise)."""
        return self.every_step and self.writer is not None

    def write_step(self, step: int, loss: Any, parts: dict[str, Any], lr: float) -> None:
        """One optimisation step's loss, loss parts (tensors or numbers) and learning rate under ``step/``, at
        global step ``step`` (counted from 1 over the whole run).  They go to ``tensorboard/steps``, a writer of
        their own: its first step is where the run (re)started, which purges what an interrupted process logged
        after that, while the epoch writer purges by epoch."""
        if not self.logs_steps:
            return
        if self.step_writer is None:
            self.step_writer = _tensorboard(self.store.tensorboard_dir, purge_step=step, sub="steps")
            if self.step_writer is None:
                self.every_step = False
                return
        self.step_writer.add_scalar("step/loss", float(loss), step)
        for k, v in parts.items():
            self.step_writer.add_scalar(f"step/{k}", float(v), step)
        self.step_writer.add_scalar("step/lr", float(lr), step)

    def notify(self, rec: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook(rec["epoch"], rec)

    def close(self) -> None:
        for w in (self.writer, self.step_writer):
            if w is not None:
                w.close()
        self.writer = self.step_writer = None


def _tensorboard(log_dir: Path, purge_step: int | None = None, sub: str = ""):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(log_dir / sub), purge_step=purge_step)


__all__ = ["TAGS", "EpochHook", "MetricSink", "tensorboard_tag"]
