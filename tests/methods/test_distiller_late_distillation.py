"""Late distillation (seed 003): cross-entropy alone before ``switch_epoch``, the full distillation loss from it on;
a run that switches mid-way resumes across the switch to the same weights."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import interrupt_training, student_cfg
from kdlab.core.checkpoint import load_checkpoint
from kdlab.core.registry import DISTILL_METHODS
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.distill.dkd import dkd_terms
from kdlab.methods.distiller import kd_loss
from kdlab.runs.student import distill


def _method(name):  # built as kdlab builds a method: its validated Params object and a context
    return lambda teacher, **params: DISTILL_METHODS.get(name).build(params, teacher=teacher)


KD, DKD, KDPlus = _method("kd"), _method("dkd"), _method("kdplus")


class _Net(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(6, 4)

    def forward(self, x, features=False):
        return self.fc(x)


def _state(epoch):
    return LoopState(epoch=epoch, epochs=4, step=0, steps_per_epoch=1, num_train=8, num_classes=4,
                     device=torch.device("cpu"))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return Batch(torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g), torch.arange(8))


@pytest.mark.parametrize("method", ["kd", "dkd", "kdplus"])
def test_loss_is_cross_entropy_before_the_switch_and_full_after(method, batch):
    teacher, student = _Net(0), _Net(1)
    obj = {"kd": lambda: KD(teacher, switch_epoch=2, gamma=0.3, alpha=0.7),
           "dkd": lambda: DKD(teacher, switch_epoch=2, warmup=0),
           "kdplus": lambda: KDPlus(teacher, base={"name": "kd", "switch_epoch": 2})}[method]()
    logits, t_logits = student(batch.x), teacher(batch.x)
    ce = F.cross_entropy(logits, batch.y)
    for epoch in (0, 1):
        out = obj(student, batch, _state(epoch))
        assert out.loss.item() == pytest.approx(ce.item(), rel=1e-6)
        assert set(out.parts) == {"ce"}
    torch.manual_seed(0)
    after = obj(student, batch, _state(2))
    if method == "kd":
        want = 0.3 * ce + 0.7 * kd_loss(logits, t_logits, 4.0)
    elif method == "dkd":
        tckd, nckd = dkd_terms(logits, t_logits, batch.y, 4.0)
        want = ce + tckd + 8.0 * nckd
    else:
        torch.manual_seed(0)
        want = 0.1 * ce + 0.9 * kd_loss(logits, t_logits, 4.0) + obj.ood_loss(student, batch.x)
        assert "ood" in after.parts
    assert after.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert after.loss.item() != pytest.approx(ce.item(), rel=1e-3)


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_switches_and_resumes_across_the_switch(trained_teacher, tmp_path, monkeypatch):
    train = {"epochs": 4, "batch_size": 32, "progress": "off", "eval_batch_size": 256}
    method = {"name": "kd", "switch_epoch": 2}

    def cfg(out):
        return student_cfg(out, trained_teacher.run_dir, method=method, train=train,
                           schedule={"name": "constant"})

    distill(cfg(tmp_path / "full"))
    hist = _history(tmp_path / "full")
    assert ["kd" in h for h in hist] == [False, False, True, True]

    restore = interrupt_training(monkeypatch, epoch=1, step=2)
    with pytest.raises(KeyboardInterrupt):
        distill(cfg(tmp_path / "cut"))
    restore()
    distill(cfg(tmp_path / "cut"), resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model_state"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in _history(tmp_path / "cut")] == [h["loss"] for h in hist]
