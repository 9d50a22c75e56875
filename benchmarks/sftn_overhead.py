"""SFTN teacher step time over standard teacher step time at CIFAR size (paper, whole runs: 1.82 for resnet32x4
with ShuffleV1 branches, 1.53 for wrn_40_2 with wrn_16_2 branches; SFTN Table 8).

Blocks of steps of the two alternate; the ratio of the medians is printed.

    python benchmarks/sftn_overhead.py [--steps 6] [--blocks 5]
"""

from __future__ import annotations

import argparse
import sys

import torch
from _steps import alternate, loop_state, step_timer

from kdlab.data.base import Batch
from kdlab.methods.base import CrossEntropy
from kdlab.methods.teacher.sftn import SFTN
from kdlab.models import build_model

PAPER = {("resnet32x4", "ShuffleV1"): 1.82, ("wrn_40_2", "wrn_16_2"): 1.53}


class _Data:
    input_shape, num_classes, train, name = (3, 32, 32), 100, range(50000), "cifar-size"


def compare(teacher: str, student: str, steps: int, blocks: int) -> float:
    torch.manual_seed(0)
    model = build_model(teacher, {}, 100, _Data.input_shape)
    sftn = SFTN(model, _Data(), {"name": student})
    opt = torch.optim.SGD([*model.parameters(), *sftn.parameters()], lr=0.01, momentum=0.9)
    batch = Batch(torch.randn(64, 3, 32, 32), torch.randint(0, 100, (64,)), torch.arange(64))
    state = loop_state(50000, 100)
    std_t, sftn_t = alternate(step_timer(model, CrossEntropy(), opt, batch, state),
                              step_timer(model, sftn, opt, batch, state), steps, blocks)
    ratio = sftn_t / std_t
    print(f"{teacher} with {student} branches: standard {1000 * std_t:8.1f} ms, SFTN {1000 * sftn_t:8.1f} ms, "
          f"ratio {ratio:.2f} (paper {PAPER[(teacher, student)]:.2f})", flush=True)
    return ratio


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--blocks", type=int, default=5)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, batch 64 at 3x32x32")
    for t, s in PAPER:
        compare(t, s, a.steps, a.blocks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
