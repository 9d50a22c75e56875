"""A real disk filling up under a running ``kdlab train-teacher``: the checkpoint of the epoch that no longer fits
is reported in kdlab's one line (the file and "No space left on device"), no temporary file is left, the previous
checkpoint is intact, and once there is room again the same command with --resume finishes the run."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kdlab.core.checkpoint import load_checkpoint
from kdlab.runs.teacher import train_teacher

# a checkpoint that is mostly one large tensor (and its momentum): the disk fills up inside torch.save's write of
# a tensor, where torch turns the OSError into "RuntimeError: [enforce fail at inline_container.cc ...]"
TINY = ["data.name=mixed-feature", "data.num_train=48", "data.num_test=24", "train.batch_size=16",
        "train.progress=off", "model=mlp", "model.hidden=[2048]"]


def _kdlab(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "kdlab", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _mount(folder: Path, size: int, remount: bool = False) -> None:
    option = f"remount,size={size}" if remount else f"size={size}"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", option, f"kdlab-test-{uuid.uuid4().hex[:8]}", str(folder)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        if remount:
            raise RuntimeError(f"cannot remount {folder}: {r.stderr.strip()}")
        pytest.skip(f"cannot mount a small file system here ({r.stderr.strip() or r.returncode})")


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of the size asked for (mounted on first use; unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = []

    def mount(size: int, remount: bool = False) -> Path:
        _mount(folder, size, remount)
        mounted.append(folder)
        return folder

    yield mount
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_disk_that_fills_up_mid_run_is_reported_in_one_line_and_resumable(tmp_path, small_disk):
    probe = train_teacher(None, [*TINY, "train.epochs=1", f"out_dir={tmp_path / 'probe'}"])  # a checkpoint's size
    size = (probe.run_dir / "checkpoints" / "last.pt").stat().st_size
    # room for epoch 1 (last.pt and its copy best.pt) and the small files, not for epoch 2's third checkpoint
    disk = small_disk(int(2.5 * size))
    out = disk / "run"
    args = ["train-teacher", *TINY, "train.epochs=2", "schedule.milestones=[1]", f"out_dir={out}"]
    r = _kdlab(tmp_path, *args)
    last = out / "checkpoints" / "last.pt"
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, r.stderr
    assert lines[-1] == f"kdlab: error: cannot write checkpoint {last}: No space left on device", r.stderr
    assert "Traceback" not in r.stderr and "inline_container" not in r.stderr
    left = [p.name for p in out.rglob("*") if p.name.endswith(".tmp") or p.name == ".next.ckpt"]
    assert not left, left
    assert load_checkpoint(last)["epoch"] == 1  # the previous epoch's checkpoint is intact
    small_disk(int(8 * size), remount=True)  # room again: the same command continues the run
    again = _kdlab(tmp_path, *args, "--resume")
    assert again.returncode == 0, again.stderr
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2] and load_checkpoint(last)["epoch"] == 2
