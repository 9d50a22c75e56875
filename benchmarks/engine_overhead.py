"""Engine overhead: one epoch of ``kdlab.engine.trainer.fit`` against a bare PyTorch loop doing the same work.

The same work per epoch: shuffle, batched crop+flip augmentation, forward/backward/SGD step for every batch, one
evaluation pass over the test split and one checkpoint write.  The engine adds its per-step bookkeeping (running
loss/accuracy on the device, NaN check), progress, metrics.jsonl and checksummed atomic checkpoints.  Trials of
the two alternate, so machine noise hits both alike; the ratio of medians is printed.

    python benchmarks/engine_overhead.py [--trials 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdlab.config import OptimConfig, ScheduleConfig, TrainConfig
from kdlab.data.augment import make_crop_flip
from kdlab.data.base import DataBundle, Split
from kdlab.engine.trainer import fit
from kdlab.methods.teacher.standard import Standard
from kdlab.models import build_model


def make_data(n_train: int, n_test: int, shape: tuple[int, ...], classes: int) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    def split(n):
        return Split(torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g))

    return DataBundle("bench", split(n_train), split(n_test), classes, shape,
                      augment=make_crop_flip(pad=4, flip=True))


def bare_epoch(model_name: str, data: DataBundle, batch: int, seed: int, out: Path) -> float:
    torch.manual_seed(seed)
    model = build_model(model_name, {}, data.num_classes, data.input_shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = data.train.x, data.train.y
    t0 = time.perf_counter()
    model.train()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    for i in range(0, len(y), batch):
        idx = perm[i:i + batch]
        xb = data.augment(x[idx], gen)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum((model(data.test.x[i:i + 512]).argmax(1) == data.test.y[i:i + 512]).sum().item()
                      for i in range(0, len(data.test.y), 512))
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, out / "bare.pt")
    del correct
    return time.perf_counter() - t0


def engine_epoch(model_name: str, data: DataBundle, batch: int, seed: int, out: Path) -> float:
    torch.manual_seed(seed)
    model = build_model(model_name, {}, data.num_classes, data.input_shape)
    run = out / f"run{seed}"
    t0 = time.perf_counter()
    fit(model, Standard(), data, optim=OptimConfig(lr=0.05), schedule=ScheduleConfig(),
        train=TrainConfig(epochs=1, batch_size=batch, progress="off", tensorboard=False, device="cpu"),
        seed=seed, run_dir=run)
    return time.perf_counter() - t0


def compare(label: str, model_name: str, data: DataBundle, batch: int, trials: int) -> float:
    bare, eng = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        bare_epoch(model_name, data, batch, 99, out)  # warm-up (allocator, kernels)
        engine_epoch(model_name, data, batch, 99, out)
        for t in range(trials):
            bare.append(bare_epoch(model_name, data, batch, t, out))
            eng.append(engine_epoch(model_name, data, batch, t, out))
    b, e = statistics.median(bare), statistics.median(eng)
    print(f"{label:<44} bare {b:7.3f}s  engine {e:7.3f}s  ratio {e / b:.3f}  "
          f"(per-trial ratios {', '.join(f'{x / y:.3f}' for x, y in zip(eng, bare))})", flush=True)
    return e / b


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="smaller data (a smoke run)")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    scale = 4 if a.quick else 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    r1 = compare("resnet20, 3x32x32, 2560 train / 1000 test", "resnet20",
                 make_data(2560 // scale, 1000 // scale, (3, 32, 32), 100), 64, a.trials)
    r2 = compare("resnet8, 1x8x8 (mixed-feature size), 2000 / 1000", "resnet8",
                 make_data(2000 // scale, 1000 // scale, (1, 8, 8), 10), 64, a.trials)
    worst = max(r1, r2)
    print(f"engine overhead: {100 * (worst - 1):+.1f}% (worst case); target <= +5%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
