"""Does ``torch.compile`` (``train.compile=true``) speed up a float32 training step on this machine?

One SGD step (forward, cross-entropy, backward, update) of a CIFAR-size model in channels-last, eager against
compiled; eager is timed before and after the compiled runs and averaged.  Prints the one-time compilation cost
and the step-time ratio.

    python benchmarks/compile_step.py [--model wrn_40_2] [--steps 6]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from kdlab.models import build_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wrn_40_2")
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_model(a.model, {}, 100, (3, 32, 32)).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(64, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (64,))

    def step(m) -> None:
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(m) -> float:
        step(m)
        t = time.perf_counter()
        for _ in range(a.steps):
            step(m)
        return (time.perf_counter() - t) / a.steps

    eager_before = timed(model)
    t = time.perf_counter()
    compiled = torch.compile(model)
    step(compiled)
    compile_s = time.perf_counter() - t
    comp = timed(compiled)
    eager = (eager_before + timed(model)) / 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, {a.model}, batch 64 at 3x32x32, fp32")
    print(f"compilation {compile_s:.1f} s; step eager {1000 * eager:.1f} ms, compiled {1000 * comp:.1f} ms, "
          f"eager / compiled {eager / comp:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
