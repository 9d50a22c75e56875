"""CIFAR training augmentation: kdlab's batched on-device pipeline against torchvision's per-image pipeline.

Batched (what kdlab runs for CIFAR): an ``ArrayLoader`` epoch over uint8 (N, 3, 32, 32) images on the device:
shuffle, gather the batch, ``random_crop_flip`` (pad 4) on the raw pixels, ``Normalize`` to float.
Per-image (what the CRD / SoTeacher code runs): a ``DataLoader`` over a dataset that makes a PIL image of each
uint8 HWC array and applies ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``,
``Normalize(...)``, with 0 and 2 worker processes.  Both produce the same normalised float batches.

Trials of all pipelines alternate, so machine noise hits them alike; images/s is the median over trials.
The batched pipeline uses ``--threads`` intra-op threads (default 1, as each DataLoader worker process has): on a
machine whose cores are busy with other work, several threads per op wait on each other and run many times slower.

    python benchmarks/augment.py [--images 10240] [--trials 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torchvision import transforms as T

from kdlab.data.augment import make_crop_flip
from kdlab.data.base import ArrayLoader, Split
from kdlab.data.transforms import CIFAR100_STATS, Normalize


class PerImage(torch.utils.data.Dataset):
    """torchvision's CIFAR100 dataset in essence: uint8 HWC arrays turned into PIL images, one at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x = x.permute(0, 2, 3, 1).contiguous().numpy()
        self.y = y.tolist()
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(*CIFAR100_STATS)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def images_per_second(run_epoch, n: int, min_seconds: float) -> float:
    """Whole epochs until ``min_seconds`` have passed (so fast pipelines are timed over enough work)."""
    done, t0 = 0, time.perf_counter()
    while True:
        run_epoch()
        done += n
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return done / dt


def batched_epoch(loader: ArrayLoader, device: torch.device):
    state = {"epoch": 0}

    def run():
        for _ in loader.epoch(state["epoch"]):
            pass
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        state["epoch"] += 1

    return run


def per_image_epoch(loader: torch.utils.data.DataLoader):
    def run():
        for _ in loader:
            pass

    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10240, help="images per epoch")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the batched pipeline")
    p.add_argument("--quick", action="store_true", help="fewer images and trials (a smoke run)")
    a = p.parse_args(argv)
    n, trials = (a.images // 4, 3) if a.quick else (a.images, a.trials)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (n,), generator=g)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

    pipelines = {}
    for bs in (64, 256):
        for dev in devices:
            loader = ArrayLoader(Split(x, y), bs, dev, shuffle=True, augment=make_crop_flip(pad=4, flip=True),
                                 prepare=Normalize(*CIFAR100_STATS))
            pipelines[("batched", dev.type, bs)] = batched_epoch(loader, dev)
        for workers in (0, 2):
            loader = torch.utils.data.DataLoader(PerImage(x, y), batch_size=bs, shuffle=True, num_workers=workers,
                                                 persistent_workers=workers > 0)
            pipelines[("per-image", f"{workers} workers", bs)] = per_image_epoch(loader)

    for run in pipelines.values():  # warm-up: worker start-up, allocator, kernels
        run()
    rates = {k: [] for k in pipelines}
    for _ in range(trials):
        for k, run in pipelines.items():
            rates[k].append(images_per_second(run, n, min_seconds=0.5))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
          f"(load average {load:.1f}), {n} images of 3x32x32 per epoch, median of {trials} trials")
    print(f"{'pipeline':<12}{'where':<14}{'batch':>6}{'images/s':>12}{'batched cpu / this':>20}")
    for (kind, where, bs), r in rates.items():
        med = statistics.median(r)
        ref = statistics.median(rates[("batched", "cpu", bs)])
        print(f"{kind:<12}{where:<14}{bs:>6}{med:>12,.0f}{ref / med:>19.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
