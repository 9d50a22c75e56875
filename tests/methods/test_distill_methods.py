"""Every registered distillation method: a short CPU training for a homogeneous and a heterogeneous pair; the
loss stays finite and decreases; an interrupted run resumes to the same weights and method state."""

import importlib
import math
import pkgutil

import distill_settings
import pytest
import torch

from conftest import TINY_DATA, TINY_TRAIN, interrupt_training
from kdlab.core.checkpoint import load_checkpoint
from kdlab.core.registry import DISTILL_METHODS
from kdlab.runs.student import distill
from kdlab.runs.teacher import train_teacher

SETTINGS: dict = {}
for _m in pkgutil.iter_modules(distill_settings.__path__):
    SETTINGS.update(importlib.import_module(f"distill_settings.{_m.name}").SETTINGS)

# (teacher, student): same family with other widths; different families
PAIRS = {"homogeneous": ("resnet8x4", "resnet8"), "heterogeneous": ("wrn_16_2", "resnet8")}
EPOCHS = 4


@pytest.mark.parametrize("name", DISTILL_METHODS.names())
def test_every_method_has_test_settings(name):
    assert name in SETTINGS, f"add test settings for {name!r} in tests/distill_settings/"


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    out = {}
    root = tmp_path_factory.mktemp("teachers")
    for arch in {t for t, _ in PAIRS.values()}:
        cfg = {"data": dict(TINY_DATA), "model": arch, "out_dir": str(root / arch),
               "train": {**TINY_TRAIN, "epochs": 2}, "schedule": {"milestones": [1]}}
        out[arch] = train_teacher(cfg).run_dir
    return out


def _cfg(out_dir, teacher_dir, student, name, params):
    return {"data": dict(TINY_DATA), "student": student, "method": {"name": name, **params},
            "teacher": {"path": str(teacher_dir)}, "out_dir": str(out_dir),
            "optim": {"lr": 0.02}, "schedule": {"name": "constant"},
            "train": {**TINY_TRAIN, "epochs": EPOCHS}}


CASES = [(n, p) for n in DISTILL_METHODS.names() if n in SETTINGS for p in PAIRS
         if p not in SETTINGS[n].get("skip_pairs", [])]


@pytest.mark.parametrize("name, pair", CASES)
def test_method_trains_and_resumes(name, pair, teachers, tmp_path, monkeypatch):
    """Both pairs: finite, decreasing loss.  The homogeneous pair also: interrupted + resumed = uninterrupted."""
    t_arch, s_arch = PAIRS[pair]
    params = SETTINGS[name]["params"]
    full = distill(_cfg(tmp_path / "full", teachers[t_arch], s_arch, name, params))
    hist = [__import__("json").loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    losses = [h["loss"] for h in hist]
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], losses
    if pair != "homogeneous":
        return

    restore = interrupt_training(monkeypatch, epoch=2, step=2)
    with pytest.raises(KeyboardInterrupt):
        distill(_cfg(tmp_path / "cut", teachers[t_arch], s_arch, name, params))
    restore()
    resumed = distill(_cfg(tmp_path / "cut", teachers[t_arch], s_arch, name, params), resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    for part in ("model_state", "objective_state"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            va, vb = a[part][k], b[part][k]
            if isinstance(va, torch.Tensor):
                assert torch.equal(va, vb), (part, k)
    assert resumed.summary["top1"] == full.summary["top1"]
