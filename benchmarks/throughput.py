"""Training throughput (images/s of one epoch) of kdlab against research-style reference loops, at CIFAR size.

For each workload (standard teacher training, SoTeacher, SFTN, KD, CRD; for wrn_40_2 -> wrn_16_2 and
resnet32x4 -> ShuffleV2) one epoch over the same synthetic CIFAR-100-format data (uint8 32x32 images, random crop
with padding 4 + horizontal flip, per-channel normalisation):

* ``reference``: the common research-code loop - a torchvision Dataset of PIL images with per-image transforms
  in a DataLoader (0 and 2 worker processes; the faster one is the reference), float32, the default memory
  format, the teacher under ``no_grad``.  It computes the same objective as kdlab (kdlab's loss modules), so only
  the engine, the data path and the numerics settings differ;
* ``kdlab fp32``: ``kdlab.engine.trainer.fit`` with in-memory uint8 data, batched augmentation, channels-last,
  the teacher in inference mode: the same arithmetic as the reference;
* ``kdlab bf16``: the same with bfloat16 autocast (mixed precision: not bit-equal to float32).

The ratio is reference time / kdlab time (higher = kdlab faster).  ``outside`` is the fraction of kdlab's step
time not spent in the objective's forward and backward (data, augmentation, optimizer, bookkeeping), from the
same batches replayed through the objective alone.

    python benchmarks/throughput.py [--images 384] [--pairs wrn resnet] [--methods standard kd ...]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from kdlab.config import OptimConfig, ScheduleConfig, TrainConfig
from kdlab.core.registry import DISTILL_METHODS, TEACHER_METHODS
from kdlab.core.state import LoopState
from kdlab.data.augment import make_crop_flip
from kdlab.data.base import Batch, DataBundle, Split
from kdlab.data.transforms import Normalize
from kdlab.engine.trainer import fit
from kdlab.methods import build_distill_objective, build_teacher_objective
from kdlab.models import build_model

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
PAIRS = {"wrn": ("wrn_40_2", "wrn_16_2"), "resnet": ("resnet32x4", "ShuffleV2")}
METHODS = ["standard", "soteacher", "sftn", "kd", "crd"]


def make_data(n: int) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 100, (n,), generator=g)
    test = Split(x[:64], y[:64])
    return DataBundle("bench-cifar100", Split(x, y), test, 100, (3, 32, 32), augment=make_crop_flip(4, True),
                      prepare=Normalize(MEAN, STD))


class PILDataset(torch.utils.data.Dataset):
    """CIFAR as the research code holds it: PIL images and per-image torchvision transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in x]
        self.y = y.tolist()
        self.t = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                            T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.t(self.images[i]), self.y[i], i


def build(method: str, pair: tuple[str, str], data: DataBundle, teacher: torch.nn.Module | None):
    t_arch, s_arch = pair
    if method in TEACHER_METHODS:
        model = build_model(t_arch, {}, 100, data.input_shape)
        params = {"student": {"name": s_arch}} if method == "sftn" else {}
        spec = type("S", (), {"name": method, "params": TEACHER_METHODS.get(method).validate(params).model_dump()})
        return model, build_teacher_objective(spec, model, data, None, 240)
    model = build_model(s_arch, {}, 100, data.input_shape)
    params = DISTILL_METHODS.get(method).validate({"nce_k": 256} if method == "crd" else {}).model_dump()
    spec = type("S", (), {"name": method, "params": params})
    return model, build_distill_objective(spec, teacher, model, data, None, 240)


def run_kdlab(method, pair, data, teacher, precision: str) -> tuple[float, float]:
    torch.manual_seed(0)
    model, objective = build(method, pair, data, teacher)
    train = TrainConfig(epochs=1, batch_size=64, progress="off", tensorboard=False, device="cpu",
                        channels_last=True, precision=precision, eval_batch_size=64)
    res = fit(model, objective, data, optim=OptimConfig(lr=0.01), schedule=ScheduleConfig(name="constant"),
              train=train, seed=0)
    epoch = res.history[0]["train_time"]
    return epoch, 1 - replay(model, objective, data, precision) / epoch


def replay(model, objective, data, precision: str) -> float:
    """Seconds of the objective's forward + backward alone on ready-made batches of the same epoch."""
    model.train()
    objective.train()
    loader = data.train_loader(64, torch.device("cpu"), 0)
    batches = [b._replace(x=b.x.contiguous(memory_format=torch.channels_last)) for b in loader.epoch(0)]
    state = LoopState(epoch=1, epochs=240, step=0, steps_per_epoch=len(batches), num_train=len(data.train),
                      num_classes=100, device=torch.device("cpu"))
    t0 = time.perf_counter()
    for b in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = objective(model, b, state)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def run_reference(method, pair, data, teacher, workers: int) -> float:
    torch.manual_seed(0)
    model, objective = build(method, pair, data, teacher)
    ds = PILDataset(data.train.x, data.train.y)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers,
                                         persistent_workers=False)
    opt = torch.optim.SGD([*model.parameters(), *objective.parameters()], lr=0.01, momentum=0.9,
                          weight_decay=5e-4)
    state = LoopState(epoch=1, epochs=240, step=0, steps_per_epoch=len(loader), num_train=len(ds), num_classes=100,
                      device=torch.device("cpu"))
    model.train()
    objective.train()
    t0 = time.perf_counter()
    for x, y, idx in loader:
        out = objective(model, Batch(x, y, idx), state)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=384, help="images per epoch (default 384 = 6 batches of 64)")
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = make_data(a.images)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {a.images} images per epoch, "
          f"batch 64; images/s (higher is better)")
    print(f"{'workload':<34} {'reference':>10} {'kdlab fp32':>11} {'ratio':>6} {'kdlab bf16':>11} {'ratio':>6} "
          f"{'outside fwd/bwd':>16}")
    ratios32, ratios16 = [], []
    for pair_name in a.pairs:
        pair = PAIRS[pair_name]
        teacher = build_model(pair[0], {}, 100, (3, 32, 32)).eval().requires_grad_(False)
        for method in a.methods:
            ref = min(run_reference(method, pair, data, teacher, w) for w in (0, 2))
            k32, outside = run_kdlab(method, pair, data, teacher, "fp32")
            k16, _ = run_kdlab(method, pair, data, teacher, "bf16")
            n = a.images
            ratios32.append(ref / k32)
            ratios16.append(ref / k16)
            name = f"{method} {pair[0]}" + (f" -> {pair[1]}" if method in ("sftn", "kd", "crd") else "")
            print(f"{name:<34} {n / ref:10.1f} {n / k32:11.1f} {ref / k32:6.2f} {n / k16:11.1f} {ref / k16:6.2f} "
                  f"{100 * outside:15.1f}%", flush=True)
    print(f"kdlab fp32 / reference: {min(ratios32):.2f}x - {max(ratios32):.2f}x (geometric mean "
          f"{float(np.exp(np.mean(np.log(ratios32)))):.2f}x); bf16: {min(ratios16):.2f}x - {max(ratios16):.2f}x "
          f"(geometric mean {float(np.exp(np.mean(np.log(ratios16)))):.2f}x); target 1.3x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
