"""2 and 3 torchrun processes (gloo) for every method with trainable parts, per-sample state, an initialisation
stage or terms relating the samples of a batch: after each epoch every process holds the same weights and state,
and without batch norm in the models (the methods' own BN layers synchronised by ``train.sync_bn``) they equal a
1-process run.

The global batch of 50 splits unevenly over 3 processes (16/17/17, and 11/11/12 in the last batch), so the
weighting of each process's share is exercised too.

Some methods amplify rounding differences at the shared settings, in one process already: a 1e-7 relative change
of the student's initial weights grows, after 16 steps, to 2e-2 (FT: an L1 loss whose terms the student drives
towards zero, where their sign flips), 3e-3 (SP, beta 3000), 2e-3 (RKD) and 3e-5 (FitNets: BN + ReLU regressor,
beta 100); for the others it stays below 1e-6.  Any change of summation order (which several processes make) does
the same, so those are compared where one process is stable (FT: 4 steps of 192; the others: learning rate
0.01), measured the same way.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddp_replicas import run_plan
from free_port import free_port
from kdlab.runs.teacher import train_teacher

TOL = 1e-4
EPOCHS = 2
DATA = {"name": "mnist1d", "num_samples": 480, "augment": "shift"}
TRAIN = {"epochs": EPOCHS, "batch_size": 50, "progress": "off", "eval_batch_size": 128, "tensorboard": False}
TEACHER_MODEL = {"name": "cnn1d", "channels": [8, 16, 16]}

# per-method (train, optim) changes of the shared settings, see the module docstring
STABLE = {"ft": ({"batch_size": 192}, {}), **{m: ({}, {"lr": 0.01}) for m in ("fitnet", "sp", "rkd")}}
DISTILL = {
    "fitnet": {"name": "fitnet", "init_epochs": 1},
    "ab": {"name": "ab", "init_epochs": 1},
    "fsp": {"name": "fsp", "init_epochs": 1},
    "ft": {"name": "ft", "init_epochs": 1},
    "vid": {"name": "vid"},
    "crd": {"name": "crd", "nce_k": 32},
    "crd-queue": {"name": "crd", "memory": "queue", "queue_size": 64, "nce_k": 16},
    "sskd": {"name": "sskd", "ss_epochs": 1},
    "ofd": {"name": "ofd"},
    "kdplus": {"name": "kdplus", "base": {"name": "crd", "nce_k": 16}, "mix": ["mixup", "cutmix", "noise"]},
    "rco": {"name": "rco", "anchors": ["epoch_001", "last"]},
    "dml": {"name": "dml"},
    # no state, but terms relating the samples of a batch: computed over the global batch
    "sp": {"name": "sp"},
    "cc": {"name": "cc"},
    "rkd": {"name": "rkd"},
    "pkt": {"name": "pkt"},
    "dist": {"name": "dist"},
    "ctkd": {"name": "ctkd", "lambda_epochs": 1},  # a trained temperature, its gradient reversed
    "ctkd_instance": {"name": "ctkd", "variant": "instance", "lambda_epochs": 1},  # a temperature per sample
    "reviewkd": {"name": "reviewkd", "warmup_epochs": 1},  # fusion modules with their own batch norms
}
# students that share the loop settings, trained as one group too (a stateful memory, an initialisation stage,
# own teacher passes, a second trained network)
GROUP = ("fitnet", "ab", "crd", "sskd", "kdplus", "dml", "rkd")
TEACHERS = {
    "soteacher": {"name": "soteacher", "lambda_lr": 1e-3},
    "sftn": {"name": "sftn"},
}


def _model(bn: bool) -> dict:
    return {"name": "cnn1d", "channels": [8, 8, 16], "batch_norm": bn}


def _plan(root: Path, teacher_dir: Path, job: str, variants: tuple[str, ...]) -> list[dict]:
    plan = []
    for variant in variants:
        bn = variant == "bn"
        # without BN in the models, the methods' own BN layers (connectors, SFTN's transforms) use the global batch
        train = {**TRAIN, "sync_bn": not bn}
        for name, method in TEACHERS.items():
            if name == "sftn":
                method = {**method, "student": _model(bn)}
            cfg = {"seed": 0, "out_dir": str(root / job / f"{variant}-{name}"), "data": DATA, "model": _model(bn),
                   "method": method, "optim": {"lr": 0.05}, "schedule": {"milestones": [1]}, "train": train}
            plan.append({"label": f"{variant}-{name}", "kind": "teacher", "cfg": cfg})
        for name, method in DISTILL.items():
            train_more, optim_more = STABLE.get(name, ({}, {}))
            cfg = {"seed": 0, "out_dir": str(root / job / f"{variant}-{name}"), "data": DATA, "student": _model(bn),
                   "teacher": {"path": str(teacher_dir)}, "method": method, "optim": {"lr": 0.05, **optim_more},
                   "schedule": {"milestones": [1]}, "train": {**train, **train_more}}
            plan.append({"label": f"{variant}-{name}", "kind": "distill", "cfg": cfg})
        if job != "one" and variant == "plain":  # the same students trained as one group, under torchrun
            items = [p for p in plan if p["kind"] == "distill" and p["label"].removeprefix("plain-") in GROUP]
            cfgs = [{**p["cfg"], "out_dir": str(root / job / "group" / p["label"])} for p in items]
            plan.append({"label": "group", "kind": "group", "cfgs": cfgs,
                         "labels": [f"group-{p['label']}" for p in items]})
    return plan


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    teacher = root / "teacher"
    train_teacher({"seed": 0, "out_dir": str(teacher), "data": DATA, "model": TEACHER_MODEL,
                   "optim": {"lr": 0.05}, "schedule": {"milestones": [1]}, "train": {**TRAIN, "save_every": 1}})
    run_plan(_plan(root, teacher, "one", ("plain",)), root / "dump-one", "one")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).resolve().parents[1] / "ddp_replicas.py"
    for n in (2, 3):
        plan_file = root / f"plan{n}.json"
        plan_file.write_text(json.dumps(_plan(root, teacher, f"p{n}", ("plain", "bn"))))
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(worker), str(plan_file), str(root / f"dump{n}")]
        res = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=1500)
        assert res.returncode == 0, res.stderr[-4000:]
    return root


def _states(folder: Path, rank: str, epoch: int) -> dict[str, torch.Tensor]:
    s = torch.load(folder / f"rank{rank}_epoch{epoch}.pt", weights_only=False)
    return {f"{part}.{k}": v for part in ("model", "objective") for k, v in s[part].items()
            if isinstance(v, torch.Tensor)}


LABELS = [f"{v}-{m}" for v in ("plain", "bn") for m in [*TEACHERS, *DISTILL]]


@pytest.mark.parametrize("nproc", [2, 3])
@pytest.mark.parametrize("label", LABELS)
def test_every_process_holds_the_same_state_after_each_epoch(dumps, label, nproc):
    folder = dumps / f"dump{nproc}" / label
    for epoch in range(1, EPOCHS + 1):
        ref = _states(folder, "0", epoch)
        for rank in range(1, nproc):
            other = _states(folder, str(rank), epoch)
            assert other.keys() == ref.keys()
            for k, v in ref.items():
                assert torch.equal(v, other[k]), (label, epoch, rank, k)


@pytest.mark.parametrize("nproc", [2, 3])
@pytest.mark.parametrize("method", GROUP)
def test_a_group_under_torchrun_equals_its_members_run_alone(dumps, method, nproc):
    """Bit-identical on every process: the group changes nothing any member computes."""
    for epoch in range(1, EPOCHS + 1):
        for rank in range(nproc):
            alone = _states(dumps / f"dump{nproc}" / f"plain-{method}", str(rank), epoch)
            grouped = _states(dumps / f"dump{nproc}" / f"group-plain-{method}", str(rank), epoch)
            assert grouped.keys() == alone.keys()
            for k, v in alone.items():
                assert torch.equal(v, grouped[k]), (method, epoch, rank, k)


@pytest.mark.parametrize("nproc", [2, 3])
@pytest.mark.parametrize("label", [lb for lb in LABELS if lb.startswith("plain-")])
def test_several_processes_equal_one_process(dumps, label, nproc):
    for epoch in range(1, EPOCHS + 1):
        one = _states(dumps / "dump-one" / label, "one", epoch)
        many = _states(dumps / f"dump{nproc}" / label, "0", epoch)
        assert many.keys() == one.keys()
        changed = False
        for k, v in one.items():
            w = many[k]
            if v.is_floating_point():
                assert torch.allclose(v, w, atol=TOL, rtol=TOL), (label, epoch, k, (v - w).abs().max().item())
            else:
                assert torch.equal(v, w), (label, epoch, k)
            changed |= k.startswith("model.")
        assert changed
