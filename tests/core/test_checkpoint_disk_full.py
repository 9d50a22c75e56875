"""A storage error part-way through a write (the disk fills up): whichever writer meets it, torch.save included
(whose C++ writer turns the file's OSError into ``RuntimeError: [enforce fail at inline_container.cc ...]``), it
surfaces as kdlab's one-line StorageError naming the file and the cause; the old file stays and no temporary is
left."""

import errno
import io
import os

import numpy as np
import pytest
import torch

from kdlab.core import checkpoint
from kdlab.core.checkpoint import atomic_write, atomic_write_bytes, atomic_write_json, load_checkpoint, save_checkpoint
from kdlab.core.errors import StorageError

pytestmark = pytest.mark.fast


class _FillingFile:
    """A file whose device fills up after ``room`` bytes: write() raises ENOSPC from then on."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def write(self, b) -> int:
        n = len(memoryview(b))
        if n > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self.real.write(b)

    def __getattr__(self, name):  # flush, fileno, close
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.real.close()


@pytest.fixture
def disk_fills_after(monkeypatch):
    """Make the files atomic_write opens run out of room after ``room`` bytes."""
    def fill(room: int) -> None:
        real_fdopen = os.fdopen
        monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, *a, **k: _FillingFile(real_fdopen(fd, *a, **k), room))
    return fill


def _payload(n: int = 20000) -> dict:
    return {"model": {"name": "mlp"}, "model_state": {"w": torch.arange(n, dtype=torch.float32)}, "epoch": 1}


def _no_temporaries(folder) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("room", [100, 2000, 40000])  # in the zip header, among the records, in the tensor's bytes
def test_torch_save_running_out_of_room_is_a_storage_error_naming_the_checkpoint(tmp_path, disk_fills_after, room):
    target = tmp_path / "last.pt"
    save_checkpoint(target, _payload(10))
    disk_fills_after(room)
    with pytest.raises(StorageError) as info:
        save_checkpoint(target, _payload())
    assert str(info.value) == f"cannot write checkpoint {target}: No space left on device"
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert load_checkpoint(target)["model_state"]["w"].numel() == 10  # the previous checkpoint is intact
    _no_temporaries(tmp_path)


def test_every_writer_names_the_file_and_the_cause(tmp_path, disk_fills_after):
    disk_fills_after(10)
    buf = io.BytesIO()
    np.save(buf, np.zeros(1000))  # numpy results are written as bytes
    for path, write in [(tmp_path / "a.npy", lambda p: atomic_write_bytes(p, buf.getvalue())),
                        (tmp_path / "s.json", lambda p: atomic_write_json(p, {"x": list(range(100))})),
                        (tmp_path / "e.pt", lambda p: atomic_write(p, lambda f: torch.save(_payload(), f)))]:
        with pytest.raises(StorageError, match=f"^cannot write {path}: No space left on device$"):
            write(path)
        assert not path.exists()
    _no_temporaries(tmp_path)


def test_a_writer_error_without_a_storage_cause_is_not_disguised(tmp_path):
    def bug(f):
        f.write(b"abc")
        raise RuntimeError("a bug of the writer")

    with pytest.raises(RuntimeError, match="a bug of the writer"):
        atomic_write(tmp_path / "x.bin", bug)
    _no_temporaries(tmp_path)
