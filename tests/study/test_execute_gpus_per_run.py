"""``--gpus-per-run G``: each run of a study is one DDP run of G processes, one per GPU.

The GPUs are mocked (the placement is the ``CUDA_VISIBLE_DEVICES`` a worker sets): on the CPU the processes of a
run join one gloo process group, so a run trained as 2 processes of a study equals the same run under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_run import run, write
from conftest import TINY_DATA
from free_port import free_port
from kdlab.analysis.study_command import run_study
from kdlab.core.errors import ConfigError
from kdlab.study import execute
from kdlab.study.execute import processes_per_run

TOL = 1e-4  # float sums in another order (two half-batch means averaged by the all-reduce)


def _study(out: Path, **train) -> dict:
    # one run: a student trained alone, whose model records each process's place in its job
    model = {"name": "module", "target": "user_nets:RankNet"}
    return {"name": "ddp", "out_dir": str(out), "seeds": [0], "data": dict(TINY_DATA),
            "teacher": {"model": "resnet8", "methods": {}},
            "student": {"model": model, "methods": {"alone": "none"},
                        "train": {"epochs": 2, "batch_size": 64, "progress": "off", "device": "cpu", **train}}}


def _ranks(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def _two_gpu_study(tmp_path: Path, monkeypatch, **train) -> Path:
    """The study trained with 2 (mocked) GPUs per run; returns its run's folder."""
    monkeypatch.setattr(execute, "visible_gpus", lambda: ["0", "1"])
    (tmp_path / "ranks").mkdir()
    monkeypatch.setenv("KDLAB_TEST_RANKS", str(tmp_path / "ranks"))
    lines = []
    res = run_study(_study(tmp_path / "two", **train), log=lines.append, gpus_per_run=2, report=False)
    assert not res.failed and res.ran == 1
    assert "1 worker on GPUs 0, 1 (CUDA_VISIBLE_DEVICES), 2 each in turn (0,1); each run trains as 2 processes, " \
           "one per GPU" in lines
    # both processes of the job built the model, each with torchrun's variables, on the worker's two GPUs
    assert _ranks(tmp_path / "ranks") == {"rank0": "2 0 2 0,1", "rank1": "2 1 2 0,1"}
    return next((tmp_path / "two").rglob("checkpoints")).parent


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model_state"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_of_two_gpus_is_two_processes_that_train_as_one(tmp_path, monkeypatch):
    # batch norm over the global batch: the 2 processes train as one process does, up to the order of float sums
    two = _two_gpu_study(tmp_path, monkeypatch, sync_bn=True)
    one = run_study(_study(tmp_path / "one", sync_bn=True), log=lambda s: None, report=False)  # in this process
    one_dir = next((tmp_path / "one").rglob("checkpoints")).parent
    a, b = _weights(one_dir), _weights(two)
    assert any("running_var" in k for k in a)
    for k, v in a.items():
        if v.is_floating_point():
            assert torch.allclose(v, b[k], atol=TOL, rtol=TOL), (k, (v - b[k]).abs().max().item())
    for ra, rb in zip(_metrics(one_dir), _metrics(two), strict=True):  # metrics reduced over the processes
        assert rb["loss"] == pytest.approx(ra["loss"], rel=TOL)
    two_top1 = json.loads((two / "summary.json").read_text())["top1"]
    assert abs(two_top1 - one.records[0]["top1"]) <= 100 / 96 + 1e-9  # at most one test sample flips


@pytest.mark.slow
def test_a_run_of_two_gpus_equals_the_run_under_torchrun(tmp_path, monkeypatch):
    two = _two_gpu_study(tmp_path, monkeypatch)
    (tmp_path / "torchrun").mkdir()
    # the run's own config (copied: a path with "=" in it reads as an override on the command line)
    (tmp_path / "run.yaml").write_text((two / "config.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "KDLAB_TEST_RANKS": str(tmp_path / "torchrun")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "kdlab", "distill", "run.yaml", f"out_dir={tmp_path / 'torchrun-run'}"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(_ranks(tmp_path / "torchrun")) == ["rank0", "rank1"]
    a, b = _weights(two), _weights(tmp_path / "torchrun-run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same processes: bit-identical
    untimed = lambda rows: [{k: v for k, v in r.items() if "time" not in k} for r in rows]
    assert untimed(_metrics(two)) == untimed(_metrics(tmp_path / "torchrun-run"))


def test_each_worker_owns_a_block_of_gpus(monkeypatch):
    seen = []

    def fake_pool(workers, ctx, threads, gpus, counter):
        seen.append((workers, gpus, counter is not None))
        raise RuntimeError("stop here")

    monkeypatch.setattr(execute, "visible_gpus", lambda: ["0", "1", "2", "3"])
    monkeypatch.setattr(execute, "worker_pool", fake_pool)
    lines = []
    with pytest.raises(RuntimeError, match="stop here"):
        execute._parallel([], [], 2, lines.append, nproc=2)
    assert seen == [(2, ["0,1", "2,3"], True)]
    assert lines == ["2 workers on GPUs 0, 1, 2, 3 (CUDA_VISIBLE_DEVICES), 2 each in turn (0,1 / 2,3); each run "
                     "trains as 2 processes, one per GPU"]


def test_processes_per_run(monkeypatch):
    monkeypatch.setattr(execute, "visible_gpus", lambda: ["0", "1", "2"])
    assert processes_per_run("local", None) == 1 and processes_per_run("local", 1.0) == 1
    assert processes_per_run("local", 3) == 3
    assert processes_per_run("ray", None) == 1 and processes_per_run("ray", 0.5) == 1
    assert processes_per_run("ray", 1) == 1 and processes_per_run("ray", 4.0) == 4  # Ray's GPUs, not these
    for launcher, g, message in [("local", 0, "whole number of GPUs, at least 1, got 0"),
                                 ("local", 1.5, "whole number of GPUs, at least 1, got 1.5"),
                                 ("local", 4, "--gpus-per-run 4: only 3 GPU(s) visible here (0, 1, 2)"),
                                 ("ray", 2.5, "a fraction of one GPU or a whole number of GPUs, got 2.5"),
                                 ("ray", -1, "got -1")]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            processes_per_run(launcher, g)
    monkeypatch.setattr(execute, "visible_gpus", lambda: [])
    assert processes_per_run("local", 1) == 1  # as before: one process, on the CPU
    with pytest.raises(ConfigError, match="--gpus-per-run 2: no CUDA GPU visible here"):
        processes_per_run("local", 2)


@pytest.mark.parametrize("flag, message", [
    ("2", "--gpus-per-run 2: no CUDA GPU visible here (a run of several GPUs is one process per GPU)"),
    ("1.5", "--gpus-per-run: the local launcher takes a whole number of GPUs, at least 1, got 1.5")])
def test_the_command_says_what_is_wrong_in_one_line(tmp_path, capsys, monkeypatch, flag, message):
    monkeypatch.setattr(execute, "visible_gpus", lambda: [])  # a machine without CUDA
    cfg = write(tmp_path / "s.yaml", _study(tmp_path / "s"))
    code, _, err = run(capsys, "study", cfg, "--gpus-per-run", flag)
    assert code == 2 and err == f"kdlab: error: {message}\n"
    assert not (tmp_path / "s").exists()  # refused before anything was written

