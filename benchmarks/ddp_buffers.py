"""Step time of a 2-process (gloo) SoTeacher job with a CIFAR-100-sized consistency buffer (50,000 x 100 floats,
20 MB), when DistributedDataParallel broadcasts the buffer before every step (what kdlab did before: the step
module wraps model and objective with ``broadcast_buffers=True``) and when kdlab keeps it out of the broadcast (the
buffer is gathered by the regulariser itself, so every process already holds the same values).

Each process takes 32 samples of a global batch of 64 (3x32x32 images, 100 classes; ``--model resnet8``, or
``mlp`` for a step so short that the broadcast dominates, as for small models or fast GPUs); blocks of steps
alternate between the two set-ups and the median seconds per step of each are compared.

    python benchmarks/ddp_buffers.py [--model resnet8|mlp] [--steps 10] [--blocks 5] [--samples 50000]
"""

from __future__ import annotations

import argparse
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _steps import alternate

from kdlab.core import distributed
from kdlab.core.distributed import DistEnv
from kdlab.core.state import LoopState
from kdlab.data.base import Batch, DataBundle, Split
from kdlab.engine import trainer
from kdlab.methods.teacher.soteacher import SoTeacher
from kdlab.models import build_model

MODELS = {"resnet8": ("resnet8", {}), "mlp": ("mlp", {"hidden": [64]})}


def _setup(model_name: str, samples: int, classes: int, ignore: bool):
    torch.manual_seed(0)
    data = DataBundle("bench", Split(torch.zeros(samples, 1), torch.zeros(samples, dtype=torch.long)),
                      Split(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long)), classes, (3, 32, 32))
    name, params = MODELS[model_name]
    model = build_model(name, params, classes, (3, 32, 32))
    objective = SoTeacher(model, data, epochs=240, lambda_lr=1e-5)
    train = trainer.TrainConfig(device="cpu")
    if ignore:
        step = trainer.wrap(model, objective, train, torch.device("cpu"), DistEnv(dist.get_rank(), 2, 0))
    else:  # the earlier set-up: everything the step module holds is broadcast before each step
        original = distributed.gathered_buffer_names
        distributed.gathered_buffer_names = lambda *a, **k: []
        try:
            step = trainer.wrap(model, objective, train, torch.device("cpu"), DistEnv(dist.get_rank(), 2, 0))
        finally:
            distributed.gathered_buffer_names = original
    opt = torch.optim.SGD([*model.parameters()], lr=0.05, momentum=0.9)
    return step, opt


def _worker(rank: int, port: int, args, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(32, 3, 32, 32, generator=g)
        batch = Batch(x, torch.randint(0, args.classes, (32,), generator=g), torch.arange(32) + 32 * rank,
                      (32 * rank, 32 * rank + 32, 64))
        state = LoopState(epoch=5, epochs=240, step=0, steps_per_epoch=100, num_train=args.samples,
                          num_classes=args.classes, device=torch.device("cpu"))

        def timer(step, opt):
            def run(n: int) -> float:
                import time

                dist.barrier()
                t0 = time.perf_counter()
                for _ in range(n):
                    out = step(batch, state)
                    opt.zero_grad(set_to_none=True)
                    out.loss.backward()
                    opt.step()
                return (time.perf_counter() - t0) / n
            return run

        before, after = (timer(*_setup(args.model, args.samples, args.classes, ignore)) for ignore in (False, True))
        t_before, t_after = alternate(before, after, args.steps, args.blocks)
        if rank == 0:
            out.put((t_before, t_after))
    finally:
        dist.destroy_process_group()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet8")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--samples", type=int, default=50000)
    ap.add_argument("--classes", type=int, default=100)
    args = ap.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(port, args, out), nprocs=2, start_method="spawn")
    t_before, t_after = out.get()
    mb = args.samples * args.classes * 4 / 1e6
    print(f"buffer {args.samples} x {args.classes} floats ({mb:.0f} MB), 2 gloo processes, {args.model}, "
          "32 samples each")
    print(f"  broadcast every step (before): {1000 * t_before:8.1f} ms/step")
    print(f"  kept out of the broadcast:     {1000 * t_after:8.1f} ms/step")
    print(f"  ratio before / after:          {t_before / t_after:8.2f}")


if __name__ == "__main__":
    main()
