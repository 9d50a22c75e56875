"""Run-folder locks that hold where ``flock`` does not (NFS without locking): a lease file created exclusively,
renewed by a heartbeat, broken when its holder stopped renewing it; chosen on network file systems or by
``KDLAB_LOCK``.  A second host is simulated by a lease file written as that host's process would write it."""

import json
import os
import threading
import time

import pytest

from conftest import teacher_cfg
from kdlab.core import locks
from kdlab.core.errors import ConfigError, RunFolderError
from kdlab.core.locks import Lease, lock_mode, run_lock

MOUNTS = """sysfs /sys sysfs rw 0 0
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/cluster nfs4 rw,nolock 0 0
server:/export/sub /mnt/cluster/local xfs rw 0 0
"""


def test_the_lock_kind_follows_the_file_system_or_the_setting(monkeypatch):
    monkeypatch.delenv("KDLAB_LOCK", raising=False)
    assert lock_mode("/mnt/cluster/runs/study", MOUNTS) == "lease"
    assert lock_mode("/mnt/cluster", MOUNTS) == "lease"
    assert lock_mode("/mnt/cluster/local/runs", MOUNTS) == "flock"  # the longest mount point wins
    assert lock_mode("/mnt/clusterx/runs", MOUNTS) == "flock"
    assert lock_mode("/home/me/runs", MOUNTS) == "flock"
    monkeypatch.setenv("KDLAB_LOCK", "lease")
    assert lock_mode("/home/me/runs", MOUNTS) == "lease"
    monkeypatch.setenv("KDLAB_LOCK", "nfs")
    with pytest.raises(ConfigError, match="KDLAB_LOCK: 'nfs' is not one of auto, flock, lease"):
        lock_mode("/home/me/runs", MOUNTS)


def _other_host(path, age=0.0):
    path.write_text(json.dumps({"host": "node17", "pid": 4242, "token": "theirs"}))
    t = time.time() - age
    os.utime(path, (t, t))


def test_a_lease_held_by_another_host_keeps_the_run_and_names_its_holder(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLAB_LOCK", "lease")
    run = tmp_path / "runs" / "seed0"
    run.parent.mkdir()
    _other_host(run.parent / ".seed0.lease")
    busy = r"seed0 is being trained by another process \(host node17, pid 4242\)"
    with pytest.raises(RunFolderError, match=busy), run_lock(run, wait=False):
        pass
    assert json.loads((run.parent / ".seed0.lease").read_text())["token"] == "theirs"  # untouched


def test_a_stale_lease_is_broken_with_a_line_and_the_new_holder_releases_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KDLAB_LOCK", "lease")
    run = tmp_path / "runs" / "seed0"
    run.parent.mkdir()
    lease = run.parent / ".seed0.lease"
    _other_host(lease, age=locks.STALE + 5)
    with caplog.at_level("INFO"), run_lock(run, wait=False):
        held = json.loads(lease.read_text())
        assert held["token"] != "theirs" and held["pid"] == os.getpid()
    assert "broke a lock not renewed for 125 s (host node17, pid 4242)" in caplog.text
    assert not lease.exists() and list(run.parent.iterdir()) == []  # nothing left behind


def test_the_heartbeat_keeps_a_long_hold_fresh_and_a_waiter_gets_the_lock_after(tmp_path):
    path, run = tmp_path / ".r.lease", tmp_path / "r"
    first = Lease(path, run, heartbeat=0.05, stale=0.3)
    got: list[float] = []

    def waiter():
        with Lease(path, run, heartbeat=0.05, stale=0.3).held(wait=True):
            got.append(time.monotonic())

    with first.held():
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.9)  # three times the stale age: only the heartbeat keeps the lease
        assert not got and json.loads(path.read_text())["token"] == first.token
        released = time.monotonic()
    t.join(5)
    assert got and got[0] >= released and not path.exists()


def test_a_run_trains_under_a_lease(tmp_path, monkeypatch):
    from kdlab.runs.teacher import train_teacher

    monkeypatch.setenv("KDLAB_LOCK", "lease")
    res = train_teacher(teacher_cfg(tmp_path / "t", train={"epochs": 1, "batch_size": 64, "progress": "off"}))
    assert res.summary["top1"] >= 0 and not list(tmp_path.glob(".t.lease*"))
