"""Where a run's epoch records go: the store's metrics file (one JSON line per epoch), the trackers of
``train.trackers`` (:mod:`kdlab.engine.trackers`: TensorBoard, W&B, MLflow) and the run's hooks.

Every tracker gets each record key under a tag grouped by the part before its first ``/``
(:func:`tensorboard_tag`): ``test/top1``, ``test/nll`` for the evaluation (``val/top1``, ``val/nll`` on a
validation split), ``train/loss``, ``train/top1``, ``train/lr`` and the loss's parts (``train/ce``,
``train/kd``, ...) for training, ``time/train_seconds``; the x-axis is the epoch.  With ``train.log_every_step``
the training loop also logs each optimisation step's loss, parts and learning rate under ``step/`` (x-axis: the
global step), for a curve within an epoch; it costs a device synchronisation per step, so it is off by default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kdlab.core.checkpoint import atomic_write_text
from kdlab.engine.store import RunStore
from kdlab.engine.trackers import Trackers

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
    """The epoch log of one run: the metrics file and the trackers (:mod:`kdlab.engine.trackers`); nothing is
    written without a store, or on processes other than rank 0."""

    def __init__(self, store: RunStore | None, writes: bool, history: list[dict[str, Any]],
                 hooks: list[EpochHook] = (), trackers: list[str] = (), every_step: bool = False,
                 config: dict[str, Any] | None = None, project: str | None = None, mlflow_uri: str | None = None):
        self.store, self.writes, self.hooks = store, writes and store is not None, list(hooks)
        self.every_step = every_step
        self.trackers: Trackers | None = None
        if self.writes:
            store.path.mkdir(parents=True, exist_ok=True)
            # drop log lines of an epoch that was interrupted before its checkpoint
            atomic_write_text(store.metrics_file, "".join(json.dumps(h) + "\n" for h in history))
            if trackers:
                self.trackers = Trackers(list(trackers), store.path, config or {}, project, mlflow_uri,
                                         store.tensorboard_dir)
                self.trackers.start(history, tensorboard_tag)

    def write(self, rec: dict[str, Any]) -> None:
        """The record on disk (before the epoch's checkpoint, which makes it final)."""
        if not self.writes:
            return
        with open(self.store.metrics_file, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def commit(self, rec: dict[str, Any]) -> None:
        """The record, now final (its checkpoint is written), to the trackers."""
        if self.trackers is not None:
            self.trackers.log_epoch(rec, tensorboard_tag)

    @property
    def logs_steps(self) -> bool:
        """Whether :meth:`write_step` logs anything (the loop need not read the step's loss otherwise)."""
        return self.every_step and self.trackers is not None and self.trackers.logs

    def write_step(self, step: int, loss: Any, parts: dict[str, Any], lr: float) -> None:
        """One optimisation step's loss, loss parts (tensors or numbers) and learning rate under ``step/``, at
        global step ``step`` (counted from 1 over the whole run)."""
        if not self.logs_steps:
            return
        values = {"step/loss": float(loss), **{f"step/{k}": float(v) for k, v in parts.items()},
                  "step/lr": float(lr)}
        self.trackers.log_step(step, values)

    def notify(self, rec: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook(rec["epoch"], rec)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """End the trackers' runs; ``summary``: the finished run's (None: the run stopped before its end)."""
        if self.trackers is not None:
            if summary is not None:
                self.trackers.summary(summary)
            self.trackers.close(finished=summary is not None)
            self.trackers = None


__all__ = ["TAGS", "EpochHook", "MetricSink", "tensorboard_tag"]
