"""torchrun with 2 CPU processes (gloo) against one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from free_port import free_port
from kdlab.core.checkpoint import load_checkpoint
from kdlab.runs.folder import RunFolder
from kdlab.runs.teacher import train_teacher

TOL = 1e-4  # float sums in another order (two half-batch means averaged by the all-reduce)


def _torchrun(tmp_path, cfg: dict, nproc: int = 2) -> subprocess.CompletedProcess:
    f = tmp_path / "cfg.yaml"
    f.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "kdlab", "train-teacher", str(f)]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def _cfg(out, method="standard"):
    # no batch norm: the only difference left between 1 and 2 processes is the order of float sums
    return {"seed": 0, "out_dir": str(out), "data": {"name": "digits", "augment": "shift"},
            "model": {"name": "mlp", "hidden": [32], "batch_norm": False}, "method": method,
            "optim": {"lr": 0.05}, "schedule": {"milestones": [2]},
            "train": {"epochs": 3, "batch_size": 64, "progress": "off", "drop_last": True}}


@pytest.mark.parametrize("method", ["standard", "soteacher"])
def test_two_processes_match_one_process(tmp_path, method):
    one = train_teacher(_cfg(tmp_path / "one", method))
    res = _torchrun(tmp_path, _cfg(tmp_path / "two", method))
    assert res.returncode == 0, res.stderr[:3000]
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    for k, v in a["model_state"].items():
        assert torch.allclose(v, b["model_state"][k], atol=TOL, rtol=TOL), k
    for k, v in a["objective_state"].items():  # SoTeacher's consistency buffer holds every process's rows
        if isinstance(v, torch.Tensor):
            assert torch.allclose(v, b["objective_state"][k], atol=TOL, rtol=TOL), k
    two = json.loads(RunFolder(tmp_path / "two").summary_file.read_text())
    assert abs(two["top1"] - one.summary["top1"]) <= 100 / 450 + 1e-9  # at most one test sample flips
    ha = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in hb] == [1, 2, 3]
    for ra, rb in zip(ha, hb):  # metrics reduced over the processes
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4) and rb["acc"] == pytest.approx(ra["acc"], abs=0.2)
    assert sorted(p.name for p in tmp_path.glob("two/*")) == sorted(p.name for p in tmp_path.glob("one/*"))


def test_sync_bn_on_cpu_processes_matches_one_process(tmp_path):
    # batch norm over the global batch (kdlab's own on gloo): a BN network trains as in one process
    def cfg(out):
        c = _cfg(out)
        c["model"] = {"name": "mlp", "hidden": [32, 16]}
        c["train"]["sync_bn"] = True
        return c

    train_teacher(cfg(tmp_path / "one"))
    res = _torchrun(tmp_path, cfg(tmp_path / "two"))
    assert res.returncode == 0, res.stderr[-3000:]
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model_state"]
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["model_state"]
    assert any("running_var" in k for k in a)
    for k, v in a.items():
        if v.is_floating_point():
            assert torch.allclose(v, b[k], atol=TOL, rtol=TOL), (k, (v - b[k]).abs().max().item())


def test_crd_distillation_runs_with_two_processes(tmp_path):
    teacher = _cfg(tmp_path / "teacher")
    teacher["train"]["epochs"] = 1
    train_teacher(teacher)
    cfg = {"seed": 0, "out_dir": str(tmp_path / "student"), "data": {"name": "digits", "augment": "shift"},
           "teacher": {"path": str(tmp_path / "teacher")}, "student": {"name": "mlp", "hidden": [16]},
           "method": {"name": "crd", "nce_k": 256}, "optim": {"lr": 0.05},
           "train": {"epochs": 2, "batch_size": 64, "progress": "off", "drop_last": True}}
    f = tmp_path / "cfg.yaml"
    f.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "kdlab", "distill", str(f)]
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[:3000]
    rows = [json.loads(x) for x in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["loss"] == r["loss"] for r in rows)
    assert json.loads(RunFolder(tmp_path / "student").summary_file.read_text())["top1"] > 20  # 10 classes: chance is 10
