import json

import pytest
import torch

from conftest import TINY_TRAIN, interrupt_training, student_cfg, teacher_cfg
from kdlab.core.checkpoint import load_checkpoint
from kdlab.core.registry import TEACHER_METHODS
from kdlab.methods.teacher.crl import correctness_ranking_loss
from kdlab.methods.teacher.mixing import cutmix_batch, mixup_batch
from kdlab.runs.student import distill
from kdlab.runs.teacher import train_teacher

BASELINES = [n for n in TEACHER_METHODS.names() if not n.startswith("test-")]
REQUIRED = {"sftn": {"student": "resnet8"}}  # parameters without a default
MODEL = {"patch-erm": "patchwise"}  # methods for one model only


OPTIM = {"l2": {"lr": 0.05, "weight_decay": 0.0}}  # l2 is weight decay in the loss: not in the optimizer too


@pytest.mark.parametrize("name", BASELINES)
def test_every_teacher_method_runs_end_to_end(name, tmp_path):
    cfg = teacher_cfg(tmp_path / name, method={"name": name, **REQUIRED.get(name, {})},
                      model=MODEL.get(name, "resnet8"))
    res = train_teacher({**cfg, "optim": OPTIM.get(name, cfg["optim"])})
    hist = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    assert 0 <= res.summary["top1"] <= 100 and "pstar_l1_train" in res.summary


def _soteacher(out, buffer, epochs=4):
    return teacher_cfg(out, method={"name": "soteacher", "buffer": buffer, "lambda_lr": 1e-3},
                       train={**TINY_TRAIN, "epochs": epochs}, schedule={"milestones": [3]})


def test_memmap_and_memory_buffers_train_identically(tmp_path):
    a = train_teacher(_soteacher(tmp_path / "mem", "memory"))
    b = train_teacher(_soteacher(tmp_path / "map", "memmap"))
    wa = load_checkpoint(a.run_dir / "checkpoints" / "last.pt")
    wb = load_checkpoint(b.run_dir / "checkpoints" / "last.pt")
    for k in wa["model_state"]:
        assert torch.equal(wa["model_state"][k], wb["model_state"][k]), k
    import numpy as np

    n, k = 192, 10
    mm = np.fromfile(b.run_dir / "consistency_buffer_0.f32", dtype=np.float32).reshape(n, k)  # epoch 3 -> file 0
    assert torch.equal(wa["objective_state"]["consistency.average"], torch.from_numpy(mm))
    hist = [json.loads(x) for x in (a.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert hist[0]["consistency"] == 0 and hist[1]["consistency"] > 0 and hist[0]["lipschitz"] > 0


@pytest.mark.parametrize("buffer", ["memory", "memmap"])
def test_resume_restores_the_consistency_buffer(buffer, tmp_path, monkeypatch):
    full = train_teacher(_soteacher(tmp_path / "full", buffer))
    restore = interrupt_training(monkeypatch, epoch=2, step=3)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(_soteacher(tmp_path / "cut", buffer))
    restore()
    train_teacher(_soteacher(tmp_path / "cut", buffer), resume=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    for part in ("model_state", "objective_state"):
        for k, v in a[part].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, b[part][k]), (part, k)
    if buffer == "memmap":
        for f in ("consistency_buffer_0.f32", "consistency_buffer_1.f32", "consistency_buffer_2.f32"):
            assert (full.run_dir / f).read_bytes() == (tmp_path / "cut" / f).read_bytes()


def test_ablations_drop_their_terms(tmp_path):
    for flag, absent in (("no_lr", "lipschitz"), ("no_cr", "consistency")):
        r = train_teacher(teacher_cfg(tmp_path / flag, method={"name": "soteacher", flag: True}))
        hist = json.loads((r.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        assert absent not in hist


def test_distill_from_a_checkpoint_teacher(tmp_path, trained_teacher):
    res = distill(student_cfg(tmp_path / "s", trained_teacher.run_dir, teacher={
        "path": str(trained_teacher.run_dir), "checkpoint": "epoch_001"}))
    assert res.summary["teacher_path"].endswith("epoch_001.pt")
    early = load_checkpoint(trained_teacher.run_dir / "checkpoints" / "epoch_001.pt")
    assert early["epoch"] == 1


def test_correctness_ranking_loss_by_hand():
    conf = torch.tensor([0.9, 0.6, 0.7])
    hist = torch.tensor([0.5, 1.0, 0.5])
    # pairs (0,1): c0 < c1 -> g = -1: max(0, (0.9 - 0.6) + 0.5) = 0.8
    # (1,2): c1 > c2 -> g = 1: max(0, -(0.6 - 0.7) + 0.5) = 0.6 ; (2,0): equal history -> 0
    assert correctness_ranking_loss(conf, hist).item() == pytest.approx((0.8 + 0.6 + 0.0) / 3)


def test_mixup_and_cutmix_batches():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 8, 8)
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    assert torch.allclose(mixup_batch(x, 0.3, perm), 0.3 * x + 0.7 * x[perm])
    out, lam = cutmix_batch(x, 0.75, perm)
    from_other = (out != x).float().mean().item()
    kept = (out == x).all(1).float().mean().item()
    assert from_other > 0 and kept == pytest.approx(lam, abs=1e-6)
    assert torch.equal(out[(out != x)], x[perm][(out != x)])


def test_l2_with_optimizer_weight_decay_is_refused(tmp_path):
    from kdlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="method: l2 adds weight decay to the loss; set optim.weight_decay=0"):
        train_teacher(teacher_cfg(tmp_path / "l2", method="l2"))
