"""Where ReviewKD's training step spends its time: the teacher's forward pass, the student's forward and backward
pass, and each fusion level (its ABF forward, its HCL term and their backward pass), on one batch of CIFAR-shaped
random images; the median of a few repetitions of each part, in ms.

    python benchmarks/reviewkd_breakdown.py [--pairs resnet32x4:resnet8x4 wrn_40_2:wrn_16_2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from method_cost import CLASSES, PAIRS, SHAPE, _objective

from kdlab.methods.distill.reviewkd import hcl_loss
from kdlab.models import build_model


def timed(fn, repeats: int) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def breakdown(pair: str, batch_size: int, repeats: int, device: torch.device) -> list[tuple[str, float]]:
    t_name, s_name = pair.split(":")
    torch.manual_seed(0)
    teacher = build_model(t_name, {}, CLASSES, SHAPE).to(device).eval()
    student = build_model(s_name, {}, CLASSES, SHAPE).to(device)
    review = _objective({"name": "reviewkd"}, teacher, student, device)
    x = torch.randn(batch_size, *SHAPE, device=device)
    y = torch.randint(0, CLASSES, (batch_size,), device=device)
    with torch.no_grad():
        t = teacher(x, features=True)
        s = student(x, features=True)
    targets = review.targets(t)

    def teacher_pass():
        with torch.no_grad():
            teacher(x, features=True)

    def student_pass():
        out = student(x, features=True)
        F.cross_entropy(out.logits, y).backward()

    parts = [("teacher forward", timed(teacher_pass, repeats)), ("student forward + backward", timed(student_pass,
                                                                                                    repeats))]
    stages = [f.detach().requires_grad_(True) for f in s.stages[1:]]
    xs = [s.embedding.detach().requires_grad_(True)[:, :, None, None], *reversed(stages)]
    residuals, residual = [None], None
    with torch.no_grad():
        for abf, feat, size in zip(review.abfs, xs, reversed(review.out_sizes)):
            _, residual = abf(feat, residual, size)
            residuals.append(residual)
    names = ["pooled"] + [f"stage {len(stages) - i} {tuple(f.shape[1:])}" for i, f in enumerate(reversed(stages))]
    for i, (abf, feat, size) in enumerate(zip(review.abfs, xs, reversed(review.out_sizes))):
        target = targets[len(targets) - 1 - i]

        def level(abf=abf, feat=feat, res=residuals[i], size=size, target=target):
            out, _ = abf(feat, res, size)
            hcl_loss([out], [target]).backward()

        parts.append((f"fusion level {names[i]}", timed(level, repeats)))
    return parts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    for pair in a.pairs:
        parts = breakdown(pair, a.batch_size, a.repeats, device)
        total = sum(ms for _, ms in parts)
        print(f"\n{pair} ({device.type}, batch {a.batch_size}): parts sum to {total:.0f} ms")
        print("| part | ms | share |\n|---|---|---|")
        for name, ms in parts:
            print(f"| {name} | {ms:.1f} | {100 * ms / total:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
