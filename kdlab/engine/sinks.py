"""Where a run's epoch records go: ``metrics.jsonl`` (one JSON line per epoch), TensorBoard when installed,
and the run's hooks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text

EpochHook = Callable[[int, dict[str, Any]], None]


class MetricSink:
    """The epoch log of one run folder (nothing is written without a folder, or on processes other than rank 0)."""

    def __init__(self, run_dir: Path | None, writes: bool, tensorboard: bool, history: list[dict[str, Any]],
                 hooks: list[EpochHook] = ()):
        self.run_dir, self.writes, self.hooks = run_dir, writes and run_dir is not None, list(hooks)
        self.writer = None
        if self.writes:
            run_dir.mkdir(parents=True, exist_ok=True)
            # drop log lines of an epoch that was interrupted before its checkpoint
            atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            if tensorboard:
                self.writer = _tensorboard(run_dir)

    def write(self, rec: dict[str, Any]) -> None:
        """The record on disk (before the epoch's checkpoint, which makes it final)."""
        if not self.writes:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.writer is not None:
            for k, v in rec.items():
                if k != "epoch" and isinstance(v, int | float):
                    self.writer.add_scalar(k, v, rec["epoch"])

    def notify(self, rec: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook(rec["epoch"], rec)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


__all__ = ["EpochHook", "MetricSink"]
