"""Progress display: a tqdm bar on a terminal, one line per epoch otherwise (logs, CI), or nothing."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from kdlab.core import log


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _fmt_metrics(m: dict[str, float]) -> str:
    keys = [("loss", "loss", "{:.3f}"), ("acc", "acc", "{:.1f}"), ("test_top1", "test", "{:.1f}")]
    return " ".join(label + " " + fmt.format(m[k]) for k, label, fmt in keys if k in m)


class Progress:
    """Shows epoch, loss, accuracy and the time left of one run."""

    def __init__(self, mode: str, desc: str, epochs: int, steps_per_epoch: int, start_epoch: int = 0,
                 stream: TextIO | None = None):
        self.stream = stream  # None: lines go to the ``kdlab`` logger (:mod:`kdlab.core.log`)
        if mode == "auto":
            mode = "bar" if getattr(stream or sys.stderr, "isatty", lambda: False)() else "log"
        self.mode = mode
        self.desc = desc
        self.epochs = epochs
        self.steps = max(steps_per_epoch, 1)
        self.start_epoch = start_epoch
        self.t0 = time.perf_counter()
        self.last_line = 0.0
        self.bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs * self.steps, initial=start_epoch * self.steps, desc=desc,
                            file=stream or sys.stderr, dynamic_ncols=True, leave=False, unit="step", mininterval=0.5)

    def step(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """``epoch`` is the number of finished epochs."""
        done = epoch - self.start_epoch
        elapsed = time.perf_counter() - self.t0
        left = elapsed / max(done, 1) * (self.epochs - epoch)
        text = _fmt_metrics(metrics)
        if self.bar is not None:
            self.bar.set_postfix_str(f"ep {epoch}/{self.epochs} {text}", refresh=True)
        elif self.mode == "log":
            now = time.perf_counter()
            if epoch == self.epochs or epoch == self.start_epoch + 1 or now - self.last_line >= 10.0:
                self.last_line = now
                self._line(f"[{self.desc}] epoch {epoch}/{self.epochs} {text} | {_fmt_time(elapsed)} elapsed, "
                           f"~{_fmt_time(left)} left")

    def end_epoch_of(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        """One member of a group finished ``epoch``: a line per member (the bar counts the group's steps)."""
        text = _fmt_metrics(metrics)
        if self.bar is not None:
            self.bar.set_postfix_str(f"ep {epoch}/{self.epochs} {name}: {text}", refresh=True)
        elif self.mode == "log":
            elapsed = time.perf_counter() - self.t0
            self._line(f"[{name}] epoch {epoch}/{self.epochs} {text} | {_fmt_time(elapsed)} elapsed (group)")

    def _line(self, text: str) -> None:
        if self.stream is None:
            log.info(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
