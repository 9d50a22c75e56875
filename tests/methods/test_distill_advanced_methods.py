"""Method-level behaviour the registry harness does not reach: RCO's default anchors from ``train.save_every``,
CRD's queue memory across a resume, initialisation stages (OFD margins, SSKD's teacher head), collaborative peers,
KD+ around a stateful method, and every method on 1D sequences."""

import json
import shutil

import pytest
import torch

from conftest import interrupt_training, student_cfg
from kdlab.core.checkpoint import load_checkpoint, save_checkpoint
from kdlab.core.errors import CheckpointError, ConfigError
from kdlab.core.registry import DISTILL_METHODS
from kdlab.core.state import LoopState
from kdlab.data.base import DataBundle, Split
from kdlab.methods.distill._contrast_memory import BankMemory, QueueMemory
from kdlab.methods.distill.ofd import gaussian_margin
from kdlab.models import build_model
from kdlab.runs.resolve import teacher_checkpoints
from kdlab.runs.student import distill

TRAIN = {"epochs": 4, "batch_size": 32, "progress": "off", "eval_batch_size": 256}


def _interrupted_and_resumed(cfg, tmp_path, monkeypatch, epoch=1):
    full = distill(cfg(tmp_path / "full"))
    restore = interrupt_training(monkeypatch, epoch=epoch, step=2)
    with pytest.raises(KeyboardInterrupt):
        distill(cfg(tmp_path / "cut"))
    restore()
    distill(cfg(tmp_path / "cut"), resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    for part in ("model_state", "objective_state"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    return full, a


def test_rco_default_anchors_switch_and_resume(trained_teacher, tmp_path, monkeypatch):
    def cfg(out):
        return student_cfg(out, trained_teacher.run_dir, method="rco", train=TRAIN, schedule={"name": "constant"})

    # the teacher run kept epoch_001.pt and epoch_002.pt: anchor 1 for epochs 1-2, anchor 2 for epochs 3-4
    _interrupted_and_resumed(cfg, tmp_path, monkeypatch, epoch=1)
    hist = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [h["rco_anchor_epoch"] for h in hist] == [1.0, 1.0, 2.0, 2.0]


def test_rco_without_epoch_checkpoints_says_what_to_do(trained_teacher, tmp_path):
    bare = tmp_path / "teacher"
    shutil.copytree(trained_teacher.run_dir, bare)
    for p in (bare / "checkpoints").glob("epoch_*.pt"):
        p.unlink()
    with pytest.raises(CheckpointError, match="save_every"):
        distill(student_cfg(tmp_path / "s", bare, method="rco", train=TRAIN))


def test_crd_queue_memory_resumes(trained_teacher, tmp_path, monkeypatch):
    method = {"name": "crd", "memory": "queue", "queue_size": 48, "nce_k": 16}

    def cfg(out):
        return student_cfg(out, trained_teacher.run_dir, method=method, train={**TRAIN, "epochs": 3})

    _, ck = _interrupted_and_resumed(cfg, tmp_path, monkeypatch)
    state = ck["objective_state"]
    assert state["memory.labels"].min() >= 0  # every initial slot has been replaced by real embeddings
    assert {"memory.ptr", "memory.student", "memory.teacher", "z"} <= set(state)


def test_crd_caps_negatives_with_a_clear_error(trained_teacher, tmp_path):
    with pytest.raises(ConfigError, match="nce_k <="):
        distill(student_cfg(tmp_path / "s", trained_teacher.run_dir, method="crd", train=TRAIN))


# ---- every method on 1D sequences, and initialisation stages ----

def _sequence_setup(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 24, generator=g), torch.randint(0, 4, (64,), generator=g)
    data = DataBundle("seq", Split(x, y), Split(x[:16], y[:16]), 4, (1, 24))
    torch.manual_seed(0)
    teacher = build_model("cnn1d", {"channels": [8, 16, 32]}, 4, (1, 24)).eval().requires_grad_(False)
    student = build_model("cnn1d", {"channels": [4, 8, 8, 16]}, 4, (1, 24))
    folder = tmp_path / "teacher" / "checkpoints"
    folder.mkdir(parents=True)
    for name, epoch in (("epoch_001", 1), ("last", 2)):
        save_checkpoint(folder / f"{name}.pt", {"model": teacher.kdlab_spec, "model_state": teacher.state_dict(),
                                                "epoch": epoch})
    loader = data.train_loader(16, torch.device("cpu"))
    state = LoopState(epoch=0, epochs=2, step=0, steps_per_epoch=len(loader), num_train=64, num_classes=4,
                      device=torch.device("cpu"), train_loader=loader)
    return data, teacher, student, folder / "last.pt", state


SEQUENCE_PARAMS = {"crd": {"nce_k": 32}, "sskd": {"ss_epochs": 1}, "ofd": {}, "dkd": {}, "rco": {},
                   "dml": {"peer": "mlp", "peer_params": {"hidden": [16]}}, "kdcl": {"num_peers": 2},
                   "kdplus": {"base": {"name": "crd", "nce_k": 32}, "mix": ["mixup", "cutmix", "noise"]}}


@pytest.mark.parametrize("name", sorted(SEQUENCE_PARAMS))
def test_method_runs_on_sequences(name, tmp_path):
    data, teacher, student, teacher_path, state = _sequence_setup(tmp_path)
    entry = DISTILL_METHODS.get(name)
    obj = entry.build(entry.validate(SEQUENCE_PARAMS[name]).model_dump(), teacher=teacher, student=student,
                      data=data, epochs=2, teacher_path=teacher_path, device=torch.device("cpu"),
                      teacher_checkpoints=lambda: teacher_checkpoints(teacher_path))
    obj.train()
    obj.on_fit_start(student, state)
    obj.on_epoch_start(student, state)
    batch = next(iter(state.train_loader.epoch(0)))
    out = obj(student, batch, state)
    assert out.logits.shape == (16, 4) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    trainable = [p for p in obj.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)  # connectors, heads, peers: all in the graph


def test_sskd_initialisation_trains_only_the_teacher_head(tmp_path):
    data, teacher, student, _, state = _sequence_setup(tmp_path)
    obj = DISTILL_METHODS.get("sskd").build({"ss_epochs": 2}, teacher=teacher, student=student, data=data)
    before = [p.clone() for p in obj.head_t.parameters()]
    t_before = [p.clone() for p in teacher.parameters()]
    obj.on_fit_start(student, state)
    assert any(not torch.equal(a, b) for a, b in zip(before, obj.head_t.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(t_before, teacher.parameters()))
    assert not any(p.requires_grad for p in obj.head_t.parameters())  # not handed to the loop's optimizer
    assert all(p.requires_grad for p in obj.head_s.parameters())


def test_ofd_margins_come_from_the_teacher_preactivations(tmp_path):
    data, teacher, student, _, state = _sequence_setup(tmp_path)
    obj = DISTILL_METHODS.get("ofd").build({"margin_batches": 1}, teacher=teacher, student=student, data=data)
    obj.on_fit_start(student, state)
    batch = next(iter(state.train_loader.epoch(0)))
    pre = teacher(batch.x, features=True).preact[-len(obj.connectors):]
    for f, m in zip(pre, obj.margins()):
        flat = f.transpose(0, 1).reshape(f.shape[1], -1).double()
        want = gaussian_margin(flat.mean(1), flat.std(1, unbiased=False)).float()
        assert torch.allclose(m, want, atol=1e-5)
        assert (m < 0).all()
    obj2 = DISTILL_METHODS.get("ofd").build({"margin": "empirical", "margin_batches": 1}, teacher=teacher,
                                            student=student, data=data)
    obj2.on_fit_start(student, state)
    f = pre[-1].transpose(0, 1).reshape(pre[-1].shape[1], -1)
    want = torch.where(f < 0, f, 0).sum(1) / (f < 0).sum(1).clamp_min(1)
    assert torch.allclose(obj2.margins()[-1], want, atol=1e-5)


def test_peers_are_trained_and_saved_with_the_objective(tmp_path):
    data, _, student, _, _ = _sequence_setup(tmp_path)
    obj = DISTILL_METHODS.get("dml").build({"num_peers": 2}, student=student, data=data)
    assert [p.kdlab_spec["name"] for p in obj.peers] == ["cnn1d", "cnn1d"]  # the student's architecture
    assert any(k.startswith("peers.1.") for k in obj.state_dict())
    assert not DISTILL_METHODS.get("dml").meta["needs_teacher"]


def _memory_worker(rank, world, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    bank = BankMemory(8, 2, torch.arange(8) % 2, momentum=0.0)
    queue = QueueMemory(4, 2)
    index = torch.tensor([0, 1]) + 2 * rank  # each process its own samples
    v = torch.full((2, 2), float(rank + 1))
    bank.update(index, index % 2, v, v)
    queue.update(index, index % 2, v, v)
    torch.save({k: t.clone() for k, t in {**bank.state_dict(), **{f"q.{k}": t for k, t in queue.state_dict().items()}}
                .items()}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_crd_memory_is_the_same_on_every_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_memory_worker, args=(2, port, str(tmp_path)), nprocs=2)
    a, b = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    r = 1 / 2 ** 0.5
    assert torch.allclose(a["student"][:4], torch.full((4, 2), r))  # rows 0-1 from rank 0, 2-3 from rank 1
    assert a["q.indices"].tolist() == [0, 1, 2, 3] and int(a["q.ptr"]) == 0
