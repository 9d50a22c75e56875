"""A distillation method's training step over KD's, on the same teacher -> student pair (CIFAR shapes).

A step is the teacher's forward (no gradient), the student's forward, the loss, backward and the SGD update on
one batch of 64 random 32x32 images.  Blocks of steps of KD and of the method alternate, so machine noise hits
both alike; the ratio of the medians is printed, with the peak memory of each (CUDA: the allocator's peak; CPU:
the growth of the process's peak resident set over the KD run, a rough figure).

    python benchmarks/method_cost.py [--methods dist ctkd reviewkd kd:logit_standardise=true]
                                     [--pairs resnet32x4:resnet8x4 wrn_40_2:wrn_16_2] [--steps 10] [--blocks 5]
                                     [--device cpu]

A method is a registered name, optionally with parameters: ``NAME:KEY=VALUE[,KEY=VALUE]`` (values read as YAML).
"""

from __future__ import annotations

import argparse
import resource
import sys

import torch
import yaml
from _steps import alternate, loop_state, step_timer

from kdlab.config.components import Component
from kdlab.core.registry import DISTILL_METHODS
from kdlab.data.base import Batch
from kdlab.methods import build_distill_objective
from kdlab.models import build_model

PAIRS = ("resnet32x4:resnet8x4", "wrn_40_2:wrn_16_2")
SHAPE, CLASSES, N_TRAIN = (3, 32, 32), 100, 50_000


class _Data:
    """What a method reads of the data set when it is built (no samples are drawn)."""

    def __init__(self):
        self.train, self.num_classes, self.input_shape = range(N_TRAIN), CLASSES, SHAPE
        self.augment = None
        self.name = "cifar100-shaped"


def _objective(method: dict, teacher, student, device):
    name, params = method["name"], {k: v for k, v in method.items() if k != "name"}
    cls = DISTILL_METHODS.get(name).obj
    validated = cls.Params(**params)
    validated = cls.resolve_params(validated) if hasattr(cls, "resolve_params") else validated
    spec = Component(name=name, params=validated.model_dump())
    return build_distill_objective(spec, teacher=teacher, student=student, data=_Data()).to(device)


def _peak(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def method_spec(text: str) -> dict:
    """``NAME[:KEY=VALUE,...]`` as a method's config mapping."""
    name, _, rest = text.partition(":")
    params = dict(item.split("=", 1) for item in rest.split(",") if item)
    return {"name": name, **{k: yaml.safe_load(v) for k, v in params.items()}}


def compare(pair: str, method: str, steps: int, blocks: int, batch_size: int, device: torch.device) -> dict:
    t_name, s_name = pair.split(":")
    torch.manual_seed(0)
    teacher = build_model(t_name, {}, CLASSES, SHAPE).to(device).eval()
    student = build_model(s_name, {}, CLASSES, SHAPE).to(device)
    batch = Batch(torch.randn(batch_size, *SHAPE, device=device),
                  torch.randint(0, CLASSES, (batch_size,), device=device),
                  torch.randperm(N_TRAIN, device=device)[:batch_size])
    state = loop_state(N_TRAIN, CLASSES)
    kd = _objective({"name": "kd", "cache_teacher": "off"}, teacher, student, device)
    other = _objective({**method_spec(method), "cache_teacher": "off"}, teacher, student, device)
    params = list(student.parameters()) + [p for p in other.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    kd_run, other_run = step_timer(student, kd, opt, batch, state), step_timer(student, other, opt, batch, state)
    kd_run(2)
    kd_peak = _peak(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    other_run(2)
    other_peak = _peak(device)
    kd_t, other_t = alternate(kd_run, other_run, steps, blocks)
    return {"pair": pair, "method": method, "kd_ms": 1000 * kd_t, "ms": 1000 * other_t, "ratio": other_t / kd_t,
            "kd_peak_mib": kd_peak, "peak_mib": other_peak}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["dist"])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    print(f"| pair | method | KD ms/step | method ms/step | ratio | peak MiB (KD / method, {device.type}) |")
    print("|---|---|---|---|---|---|")
    for pair in a.pairs:
        for method in a.methods:
            r = compare(pair, method, a.steps, a.blocks, a.batch_size, device)
            print(f"| {r['pair']} | {r['method']} | {r['kd_ms']:.1f} | {r['ms']:.1f} | {r['ratio']:.2f} | "
                  f"{r['kd_peak_mib']:.0f} / {r['peak_mib']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
