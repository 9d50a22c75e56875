"""Disk cost of giving every checkpoint name its own bytes (best.pt, epoch_XXX.pt, last.pt, prev.pt) against
the hard links between names of one epoch that kdlab used before.

    python benchmarks/checkpoint_disk.py [--epochs 30] [--save-every 10] [--model resnet8x4]

Trains one teacher on the mixed-feature data and reports, for the checkpoints it leaves: the bytes on disk now
(distinct inodes), and the bytes the old layout would have used (one file per distinct epoch among the names).
"""

import argparse
import os
import tempfile
from pathlib import Path

from kdlab.core.checkpoint import load_metadata
from kdlab.runs.teacher import train_teacher


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--save-every", type=int, default=10)
    ap.add_argument("--model", default="resnet8x4")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train_teacher({"out_dir": str(run), "data": {"name": "mixed-feature", "num_train": 512, "num_test": 256},
                       "model": a.model, "train": {"epochs": a.epochs, "save_every": a.save_every,
                                                    "progress": "off"}})
        files = sorted((run / "checkpoints").glob("*.pt"))
        inodes = {f.stat().st_ino: f.stat().st_size for f in files}
        by_epoch: dict[int, int] = {}
        for f in files:
            by_epoch.setdefault(int(load_metadata(f)["epoch"]), f.stat().st_size)
        now, old = sum(inodes.values()), sum(by_epoch.values())
        print(f"{a.model}, {a.epochs} epochs, save_every {a.save_every}: {len(files)} names "
              f"({', '.join(f.name for f in files)})")
        print(f"  own bytes per name: {now / 2**20:.1f} MiB; hard links per epoch (before): {old / 2**20:.1f} MiB; "
              f"ratio {now / old:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
