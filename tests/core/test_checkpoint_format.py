"""Checkpoint format 2: a plain torch.save zip file with a SHA-256 per section; the weights-only loaders read and
verify the model's section and the metadata only."""

import hashlib
import io
import json
import os
import struct
import zipfile

import pytest
import torch
import torch.nn as nn

from conftest import TINY_TRAIN, student_cfg, teacher_cfg
from kdlab.core import checkpoint
from kdlab.core.checkpoint import FORMAT, load_checkpoint, load_metadata, load_weights, save_checkpoint
from kdlab.core.errors import CheckpointError


def _payload(seed: int = 0, buffer_rows: int = 64) -> dict:
    """A training checkpoint's payload: model, SGD momentum, an objective buffer (as SoTeacher's) and metadata."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(16, 6)).logsumexp(1).sum().backward()
    opt.step()
    return {"kdlab_version": "test", "model": {"name": "test-mlp", "params": {}, "num_classes": 3},
            "model_state": model.state_dict(), "objective_state": {"buffer": torch.rand(buffer_rows, 3)},
            "optimizer_state": opt.state_dict(), "epoch": 7, "best": {"epoch": 5, "test_top1": 61.5},
            "history": [{"epoch": e + 1, "loss": 1.0 / (e + 1)} for e in range(7)], "seed": seed,
            "config": {"model": {"name": "test-mlp"}, "holdout": 0.0}}


def _records(path) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every record of a zip file, from its local headers."""
    raw = path.read_bytes()
    out = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            h = info.header_offset
            assert raw[h:h + 4] == b"PK\x03\x04"
            name_len, extra_len = struct.unpack("<HH", raw[h + 26:h + 30])
            out.append((info.filename, h + 30 + name_len + extra_len, info.compress_size))
    return out


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    return []


def _damage(path, tensors, keep=()) -> int:
    """Flip bytes, in place, inside the zip records holding ``tensors`` (none of ``keep``'s); how many records."""
    raw = bytearray(path.read_bytes())
    wanted = {t.contiguous().numpy().tobytes() for t in tensors if t.numel()}
    kept = {t.contiguous().numpy().tobytes() for t in keep}
    hit = 0
    for name, start, size in _records(path):
        content = bytes(raw[start:start + size])
        if "/data/" in name and content in wanted:
            assert content not in kept, f"{name} is also a kept tensor's record"
            for i in range(start, start + size, max(size // 4, 1)):
                raw[i] ^= 0xFF
            hit += 1
    path.write_bytes(bytes(raw))
    return hit


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.fast
def test_damaged_optimizer_and_objective_tensors_leave_the_weights_loadable(tmp_path):
    p = tmp_path / "c.pt"
    payload = _payload()
    save_checkpoint(p, payload)
    damaged = _tensors(payload["objective_state"]) + _tensors(payload["optimizer_state"])
    assert _damage(p, damaged, keep=_tensors(payload["model_state"])) == len(damaged)
    w = load_weights(p)
    assert _same(w["model_state"], payload["model_state"])
    assert all(t.device.type == "cpu" for t in w["model_state"].values())
    assert "objective_state" not in w and "optimizer_state" not in w
    assert w["epoch"] == 7 and w["model"] == payload["model"] and w["config"] == payload["config"]
    assert w["model_state"]._metadata == payload["model_state"]._metadata  # module versions for load_state_dict
    meta = load_metadata(p)
    assert "model_state" not in meta and meta["history"] == payload["history"]
    with pytest.raises(CheckpointError, match=r"corrupted or truncated \(checksum mismatch in (objective|optimizer)"):
        load_checkpoint(p)


@pytest.mark.fast
def test_weights_only_tensors_are_copies_not_views_of_the_mapped_file(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, _payload())
    w = load_weights(p)
    with open(p, "r+b") as f:  # overwritten in place: tensors still mapped onto the file would change with it
        f.write(bytes(p.stat().st_size))
    assert _same(w["model_state"], _payload()["model_state"])


@pytest.mark.fast
def test_full_load_gives_back_every_section(tmp_path):
    p = tmp_path / "c.pt"
    payload = _payload()
    save_checkpoint(p, payload)
    ck = load_checkpoint(p)
    assert ck.keys() == payload.keys()
    assert _same(ck["model_state"], payload["model_state"])
    assert torch.equal(ck["objective_state"]["buffer"], payload["objective_state"]["buffer"])
    assert ck["optimizer_state"]["param_groups"] == payload["optimizer_state"]["param_groups"]
    assert all(torch.equal(a["momentum_buffer"], b["momentum_buffer"]) for a, b in
               zip(ck["optimizer_state"]["state"].values(), payload["optimizer_state"]["state"].values()))
    save_checkpoint(tmp_path / "again.pt", ck)  # a loaded payload saves again (the file's own keys are not in it)
    assert _same(load_weights(tmp_path / "again.pt")["model_state"], payload["model_state"])
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", {**payload, "sha256": {}})


@pytest.mark.fast
def test_plain_torch_load_opens_a_kdlab_checkpoint(tmp_path):
    p = tmp_path / "c.pt"
    payload = _payload()
    save_checkpoint(p, payload)
    for mmap in (False, True):
        raw = torch.load(p, weights_only=True, mmap=mmap, map_location="cpu")
        assert raw["format"] == FORMAT == "kdlab-checkpoint-2"
        assert set(raw["sha256"]) == {"model_state", "objective_state", "optimizer_state", "meta"}
        assert all(isinstance(d, str) and len(d) == 64 for d in raw["sha256"].values())
        assert _same(raw["model_state"], payload["model_state"]) and raw["epoch"] == 7


@pytest.mark.fast
def test_saved_tensors_are_hashed_and_written_once(tmp_path):
    """Tied weights (one tensor under two keys) are written once and come back equal; a view's content is what
    is checksummed, whatever else its storage holds."""
    p = tmp_path / "c.pt"
    w = torch.randn(4, 4)
    big = torch.arange(1000.0)
    save_checkpoint(p, {"model": {"name": "x"}, "model_state": {"a": w, "b": w, "v": big[10:20]}, "epoch": 1})
    ck = load_checkpoint(p)
    assert torch.equal(ck["model_state"]["a"], w) and torch.equal(ck["model_state"]["b"], w)
    assert torch.equal(ck["model_state"]["v"], torch.arange(10.0, 20.0))
    assert sum(name.split("/")[-2] == "data" for name, _, _ in _records(p)) == 2


def _write_format_1(path, payload):
    """A checkpoint as kdlab wrote them before format 2: a JSON header line, then a torch.save body."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    header = {"format": "kdlab-checkpoint-1", "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    path.write_bytes(json.dumps(header).encode() + b"\n" + body)
    return body


@pytest.mark.fast
def test_format_1_checkpoints_still_load(tmp_path):
    p = tmp_path / "old.pt"
    payload = _payload()
    body = _write_format_1(p, payload)
    ck = load_checkpoint(p)
    assert ck.keys() == payload.keys() and _same(ck["model_state"], payload["model_state"])
    w = load_weights(p)
    assert _same(w["model_state"], payload["model_state"]) and "optimizer_state" not in w and w["epoch"] == 7
    assert load_metadata(p)["config"] == payload["config"]
    raw = p.read_bytes()
    at = len(raw) - len(body) + len(body) // 2
    p.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
    for load in (load_checkpoint, load_weights, load_metadata):
        with pytest.raises(CheckpointError, match="corrupted or truncated"):
            load(p)


@pytest.mark.fast
@pytest.mark.parametrize("load", [load_checkpoint, load_weights])
def test_truncated_or_flipped_model_section_is_detected(tmp_path, load):
    p = tmp_path / "c.pt"
    payload = _payload()
    save_checkpoint(p, payload)
    raw = p.read_bytes()
    for n in (0, 3, 100, len(raw) // 2, len(raw) - 1):
        p.write_bytes(raw[:n])
        with pytest.raises(CheckpointError, match="corrupted or truncated|not a kdlab checkpoint"):
            load(p)
    p.write_bytes(raw)
    assert _damage(p, [payload["model_state"]["3.weight"]]) == 1
    with pytest.raises(CheckpointError, match=r"corrupted or truncated \(checksum mismatch in model_state\)"):
        load(p)


@pytest.mark.fast
@pytest.mark.parametrize("load", [load_checkpoint, load_weights, load_metadata])
def test_files_that_are_not_kdlab_checkpoints(tmp_path, load):
    p = tmp_path / "x.pt"
    for content in (b"", b"garbage", b"PK\x03\x04 not really a zip"):
        p.write_bytes(content)
        with pytest.raises(CheckpointError, match="not a kdlab checkpoint|corrupted or truncated"):
            load(p)
    torch.save({"weight": torch.ones(2)}, p)  # a zip file torch reads, but not a checkpoint
    with pytest.raises(CheckpointError, match=r"not a kdlab checkpoint \(unknown format\)"):
        load(p)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load(tmp_path / "missing.pt")


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's unpickler about the globals a damaged pickle names
def test_every_flipped_byte_is_detected_or_changes_nothing(tmp_path):
    """Any single damaged byte of a small checkpoint: both loaders refuse it with a CheckpointError, or give back
    exactly what was saved (zip metadata torch does not use, alignment padding)."""
    p, q = tmp_path / "c.pt", tmp_path / "d.pt"
    payload = _payload(buffer_rows=4)
    save_checkpoint(p, payload)
    raw = p.read_bytes()
    ref = {"full": checkpoint._sections(load_checkpoint(p)), "weights": checkpoint._sections(load_weights(p))}
    ref = {k: {n: checkpoint._digest(v) for n, v in s.items()} for k, s in ref.items()}
    refused, tried = 0, range(0, len(raw), 11)
    for i in tried:
        q.write_bytes(raw[:i] + bytes([raw[i] ^ 0x5A]) + raw[i + 1:])
        for kind, load in (("full", load_checkpoint), ("weights", load_weights)):
            try:
                got = load(q)
            except CheckpointError as e:
                assert "\n" not in str(e)
                refused += 1
                continue
            assert {n: checkpoint._digest(v) for n, v in checkpoint._sections(got).items()} == ref[kind], (i, kind)
    assert refused > len(tried) // 2, (refused, len(tried))  # most bytes matter to one loader or both


def test_a_soteacher_teachers_buffer_is_not_read_when_distilling(tmp_path, monkeypatch):
    """The teacher's checkpoint holds its consistency buffer (num_train x num_classes): distilling from it maps the
    file and copies out the weights only; damaging the buffer in place does not stop the student's run (while
    resuming the teacher would refuse the file)."""
    t = tmp_path / "teacher"
    from kdlab.runs.student import distill
    from kdlab.runs.teacher import train_teacher

    train_teacher(teacher_cfg(t, method={"name": "soteacher"}))
    last = t / "checkpoints" / "last.pt"
    full = load_checkpoint(last)
    rows = (192, 10)  # TINY_DATA's num_train x classes
    buffers = [x for x in _tensors(full["objective_state"]) if tuple(x.shape) == rows]
    assert buffers, "the SoTeacher checkpoint holds no consistency buffer"
    assert _damage(last, buffers, keep=_tensors(full["model_state"])) >= 1
    with pytest.raises(CheckpointError, match="checksum mismatch in objective_state"):
        load_checkpoint(last)

    loads, copied = [], []
    real_load, real_to = torch.load, checkpoint._to

    def spy_load(f, *args, **kw):
        loads.append((os.path.realpath(f), kw))  # the loaders name the file they hold open: /proc/self/fd/N
        return real_load(f, *args, **kw)

    def spy_to(obj, device, memo, copy=False):
        out = real_to(obj, device, memo, copy)
        if copy:
            copied.extend(tuple(x.shape) for x in _tensors(out))
        return out

    monkeypatch.setattr(checkpoint.torch, "load", spy_load)
    monkeypatch.setattr(checkpoint, "_to", spy_to)
    # from the file itself: through its run folder, the checksums the run wrote would refuse the damaged file
    s = distill(student_cfg(tmp_path / "student", last, train={**TINY_TRAIN, "epochs": 1}))
    assert s.summary["top1"] >= 0
    teacher_loads = [kw for f, kw in loads if f == os.path.realpath(last)]
    assert teacher_loads and all(kw.get("mmap") is True and kw.get("map_location") == "cpu" and
                                 kw.get("weights_only") is True for kw in teacher_loads)
    assert copied and rows not in copied
    assert set(copied) <= {tuple(x.shape) for x in full["model_state"].values()}


@pytest.mark.fast
def test_a_checkpoint_replaced_while_it_is_mapped_is_read_from_one_file(tmp_path, monkeypatch):
    """torch opens a memory-mapped checkpoint twice (its zip directory, then the mapping): a run that saves its
    next epoch in between must not leave one file's offsets applied to the other's bytes."""
    p, following = tmp_path / "last.pt", tmp_path / ".next.ckpt"
    first, second = _payload(seed=0), _payload(seed=1, buffer_rows=80)  # the files' layouts differ
    save_checkpoint(p, first)
    real, saved = torch.UntypedStorage.from_file, []

    def next_epoch_saved_meanwhile(*args, **kw):
        if not saved:
            save_checkpoint(following, second)
            os.replace(following, p)
            saved.append(True)
        return real(*args, **kw)

    monkeypatch.setattr(torch.UntypedStorage, "from_file", next_epoch_saved_meanwhile)
    assert _same(load_weights(p)["model_state"], first["model_state"])
    assert _same(load_weights(p)["model_state"], second["model_state"])  # the next load reads the new file
