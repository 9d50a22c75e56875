"""Models of a user's own, for the tests that train, export or load them through kdlab's module adapter."""

import os
import time
from pathlib import Path

import torch.nn as nn


class UserNet(nn.Module):
    """A user's own classifier (not a kdlab model): trained through the module adapter, or saved by hand."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.down1 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.BatchNorm2d(4 * width), nn.ReLU())
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.down2(self.down1(self.stem(x))).mean((2, 3)))


class DieOnceNet(UserNet):
    """A UserNet whose process dies (``os._exit``, as a killed worker) at its ``die_at``-th training step, once:
    only where ``KDLAB_TEST_DIE_ONCE`` names a file that does not exist yet (the death creates it)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 4, die_at: int = 5):
        super().__init__(num_classes, in_channels, width)
        self.die_at, self.steps = die_at, 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            marker = os.environ.get("KDLAB_TEST_DIE_ONCE")
            if marker and self.steps == self.die_at and not Path(marker).exists():
                Path(marker).touch()
                os._exit(1)
        return super().forward(x)


class RankNet(UserNet):
    """A UserNet that records the process's place in its job as it is built, where ``KDLAB_TEST_RANKS`` names a
    folder: a file ``rank<RANK>`` holding ``WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE CUDA_VISIBLE_DEVICES`` (nothing
    in a process outside a job)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 4):
        super().__init__(num_classes, in_channels, width)
        folder, rank = os.environ.get("KDLAB_TEST_RANKS"), os.environ.get("RANK")
        if folder and rank is not None:
            values = [os.environ.get(k, "-") for k in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                                       "CUDA_VISIBLE_DEVICES")]
            (Path(folder) / f"rank{rank}").write_text(" ".join(values))


class PauseOnceNet(UserNet):
    """A UserNet whose process, at its ``pause_at``-th training step, once, writes ``paused`` into the folder
    ``KDLAB_TEST_PAUSE`` names and waits there (up to 10 minutes) until a file ``go`` appears: a job caught mid-run
    for a test to stop it (the wait is skipped once ``paused`` exists, e.g. in the restarted job)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 4, pause_at: int = 5):
        super().__init__(num_classes, in_channels, width)
        self.pause_at, self.steps = pause_at, 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            folder = os.environ.get("KDLAB_TEST_PAUSE")
            if folder and self.steps == self.pause_at and not (Path(folder) / "paused").exists():
                (Path(folder) / "paused").write_text(str(os.getpid()))
                deadline = time.monotonic() + 600
                while not (Path(folder) / "go").exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
        return super().forward(x)
