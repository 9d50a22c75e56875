"""Faults around checkpoints: a foreign checkpoint, a damaged twin, a deleted last.pt."""

import json
import shutil

import pytest

from conftest import TINY_TRAIN, interrupt_training, teacher_cfg
from kdlab.core.checkpoint import load_checkpoint
from kdlab.core.errors import CheckpointError
from kdlab.runs.teacher import train_teacher

TRAIN = {**TINY_TRAIN, "epochs": 3, "save_every": 1}


def _cfg(d, seed=0):
    return teacher_cfg(d, seed=seed, train=TRAIN, schedule={"milestones": [2]})


def _interrupted(tmp_path, monkeypatch, name, seed=0, epoch=2):
    undo = interrupt_training(monkeypatch, epoch=epoch, step=1)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(_cfg(tmp_path / name, seed))
    undo()
    return tmp_path / name / "checkpoints"


def test_a_checkpoint_of_another_run_is_refused_on_resume(tmp_path, monkeypatch, capsys):
    ours = _interrupted(tmp_path, monkeypatch, "s0", seed=0)
    theirs = _interrupted(tmp_path, monkeypatch, "s1", seed=1)
    shutil.copyfile(theirs / "last.pt", ours / "last.pt")
    res = train_teacher(_cfg(tmp_path / "s0", 0), resume=True)  # falls back to its own previous checkpoint
    err = capsys.readouterr().err
    assert "belongs to another run (seed: 1 -> 0)" in err and "resuming from the previous checkpoint" in err
    full = train_teacher(_cfg(tmp_path / "clean", 0))
    assert res.summary["top1"] == full.summary["top1"] and res.summary["seed"] == 0
    # with no checkpoint of its own to fall back to, the foreign one is an error, not a resume
    ours = _interrupted(tmp_path, monkeypatch, "t0", seed=0, epoch=1)
    shutil.copyfile(theirs / "last.pt", ours / "last.pt")
    with pytest.raises(CheckpointError, match="belongs to another run"):
        train_teacher(_cfg(tmp_path / "t0", 0), resume=True)


def test_checkpoint_names_do_not_share_bytes(tmp_path):
    train_teacher(_cfg(tmp_path / "r"))
    ck = tmp_path / "r" / "checkpoints"
    inodes = {p.name: p.stat().st_ino for p in ck.glob("*.pt")}
    assert len(set(inodes.values())) == len(inodes), inodes
    best_epoch = load_checkpoint(ck / "best.pt")["epoch"]
    for name in ("last.pt", "prev.pt", f"epoch_{best_epoch:03d}.pt"):
        raw = bytearray((ck / name).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (ck / name).write_bytes(raw)
    assert load_checkpoint(ck / "best.pt")["epoch"] == best_epoch  # its twins' damage is not its own


def test_a_deleted_last_checkpoint_resumes_from_the_previous_one(tmp_path, monkeypatch, capsys):
    ck = _interrupted(tmp_path, monkeypatch, "r", epoch=2)
    (ck / "last.pt").unlink()
    res = train_teacher(_cfg(tmp_path / "r"), resume=True)
    assert "last.pt is missing; resuming from the previous checkpoint" in capsys.readouterr().err
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # epoch 2 redone from prev.pt (epoch 1), not a restart from epoch 0
    assert res.summary["top1"] == train_teacher(_cfg(tmp_path / "clean")).summary["top1"]


def test_temporaries_of_a_killed_process_are_removed_on_the_next_start(tmp_path, monkeypatch):
    ck = _interrupted(tmp_path, monkeypatch, "r", epoch=2)
    litter = [ck / ".last.pt.k2j3.tmp", ck / ".next.ckpt", tmp_path / "r" / ".summary.json.x8f.tmp"]
    for f in litter:
        f.write_bytes(b"\0" * 1024)
    keep = tmp_path / "r" / "notes.txt"
    keep.write_text("mine")
    train_teacher(_cfg(tmp_path / "r"), resume=True)
    assert not any(f.exists() for f in litter) and keep.exists()
    assert not list((tmp_path / "r").rglob("*.tmp"))


def test_eval_and_teacher_loading_refuse_a_checkpoint_of_another_run(tmp_path, capsys):
    from kdlab.cli.main import main
    from kdlab.runs.student import distill

    train_teacher(_cfg(tmp_path / "s0", 0))
    train_teacher(_cfg(tmp_path / "s1", 1))
    shutil.copyfile(tmp_path / "s1" / "checkpoints" / "best.pt", tmp_path / "s0" / "checkpoints" / "best.pt")
    assert main(["eval", str(tmp_path / "s0"), "checkpoint=best"]) == 1
    assert "belongs to another run than" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "s0")]) == 0  # its own last.pt is fine
    with pytest.raises(CheckpointError, match="belongs to another run"):
        distill({"seed": 0, "out_dir": str(tmp_path / "st"), "data": _cfg(tmp_path)["data"], "student": "resnet8",
                 "method": "kd", "teacher": {"path": str(tmp_path / "s0"), "checkpoint": "best"},
                 "train": TRAIN})


def test_training_data_replaced_between_kill_and_resume_is_refused(tmp_path, monkeypatch):
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()

    def write(shift):
        for name, n in (("train", 64), ("test", 32)):
            np.savez(data / f"{name}.npz", x=rng.normal(size=(n, 8)).astype(np.float32) + shift, y=np.arange(n) % 4)

    write(0.0)
    cfg = teacher_cfg(tmp_path / "r", data={"name": "arrays", "root": str(data)}, model="mlp",
                      train={**TRAIN, "batch_size": 16}, schedule={"milestones": [2]})
    undo = interrupt_training(monkeypatch, epoch=2, step=1)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(cfg)
    undo()
    write(1.0)
    from kdlab.data import _cached

    _cached.cache_clear()  # a new process reads the files again
    with pytest.raises(CheckpointError, match="trained on other data than the run's data set holds now"):
        train_teacher(cfg, resume=True)
