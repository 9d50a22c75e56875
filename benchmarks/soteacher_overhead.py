"""SoTeacher's training-step time over standard training's, for the same model and data (paper: about 1.05).

A step is forward, loss, backward and SGD update on one batch; SoTeacher adds the Lipschitz term (one pass over
the layers) and the consistency term (a buffer read and write keyed by sample index).  Blocks of steps of the
two alternate, so machine noise hits both alike; the ratio of the medians is printed.

    python benchmarks/soteacher_overhead.py [--steps 20] [--blocks 7]
"""

from __future__ import annotations

import argparse
import sys

import torch
from _steps import alternate, loop_state, step_timer

from kdlab.data.base import Batch
from kdlab.methods.base import CrossEntropy
from kdlab.methods.teacher.soteacher import SoTeacher
from kdlab.models import build_model


class _Data:
    def __init__(self, n, classes, shape):
        self.train, self.num_classes, self.input_shape = range(n), classes, shape


def compare(model_name, shape, classes, batch_size, n_train, steps, blocks, lipschitz="reference"):
    torch.manual_seed(0)
    model = build_model(model_name, {}, classes, shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = Batch(torch.randn(batch_size, *shape), torch.randint(0, classes, (batch_size,)),
                  torch.randperm(n_train)[:batch_size])
    state = loop_state(n_train, classes)
    so = SoTeacher(model, _Data(n_train, classes, shape), epochs=240, lipschitz=lipschitz)
    std_t, so_t = alternate(step_timer(model, CrossEntropy(), opt, batch, state),
                            step_timer(model, so, opt, batch, state), steps, blocks)
    ratio = so_t / std_t
    print(f"{model_name:<12} {str(shape):<13} batch {batch_size:<4} standard {1000 * std_t:8.2f} ms"
          f"  soteacher({lipschitz}) {1000 * so_t:8.2f} ms  ratio {ratio:.3f}", flush=True)
    return ratio


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--blocks", type=int, default=7)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    ratios = [
        compare("wrn_40_2", (3, 32, 32), 100, 64, 50000, a.steps, a.blocks),
        compare("resnet32x4", (3, 32, 32), 100, 64, 50000, max(a.steps // 4, 3), a.blocks),
        compare("resnet110", (3, 32, 32), 100, 64, 50000, max(a.steps // 2, 3), a.blocks),
        compare("resnet8", (1, 8, 8), 10, 64, 2000, a.steps * 5, a.blocks),
        compare("wrn_40_2", (3, 32, 32), 100, 64, 50000, a.steps, a.blocks, lipschitz="exact"),
    ]
    print(f"SoTeacher / standard step time: {min(ratios):.3f} - {max(ratios):.3f} (target <= 1.05 at CIFAR size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
