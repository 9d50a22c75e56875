"""Initialisation stages (AB, FSP, FitNets' hint stage) train the student as the CRD benchmark's
helper/pretrain.py does: its feature modules in train mode, its head frozen in eval mode."""

import pytest
import torch

from kdlab.core.registry import DISTILL_METHODS
from kdlab.core.state import LoopState
from kdlab.data.base import DataBundle, Split
from kdlab.methods.distill.ab import AB
from kdlab.methods.distill.fitnet import FitNet
from kdlab.methods.distill.fsp import FSP
from kdlab.models import build_model


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    return DataBundle("toy", Split(x, y), Split(x[:16], y[:16]), 10, (3, 32, 32))


@pytest.mark.parametrize("cls", [AB, FSP, FitNet])
def test_init_stage_trains_the_stages_and_leaves_the_head_alone(cls):
    data = _data()
    torch.manual_seed(0)
    teacher = build_model("wrn_16_2", {}, 10, (3, 32, 32)).eval().requires_grad_(False)
    student = build_model("wrn_16_1", {}, 10, (3, 32, 32))
    entry = next(e for e in DISTILL_METHODS.entries() if e.obj is cls)
    method = entry.build({"init_epochs": 1, "init_lr": 0.05}, teacher=teacher, student=student, data=data)
    head = {k: v.clone() for k, v in [*student.bn.state_dict().items(), *student.classifier.state_dict().items()]}
    stages = {k: v.clone() for k, v in student.stages.state_dict().items()}
    loader = data.train_loader(16, torch.device("cpu"))
    state = LoopState(0, 2, 0, len(loader), 64, 10, torch.device("cpu"), train_loader=loader)
    student.train()
    method.initialize(student, state)
    after = {**student.bn.state_dict(), **student.classifier.state_dict()}
    assert all(torch.equal(v, after[k]) for k, v in head.items())  # not trained, no statistics updated
    now = student.stages.state_dict()
    changed = [k for k, v in stages.items() if not torch.equal(v, now[k])]
    assert any(k.endswith("conv1.weight") for k in changed)  # the stages learned
    assert any(k.endswith("running_mean") for k in changed)  # in train mode
    assert student.training and student.bn.training  # modes restored
