"""One failing process of a torchrun job ends the whole job within seconds, each process saying why."""

import os
import subprocess
import sys
import time

import yaml

from free_port import free_port

FAILS_ON_RANK_1 = """
import os
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if os.environ.get("RANK") == "1" and self.training and self.calls == 5:
            raise ValueError("rank 1 breaks on purpose")
        return self.fc(self.body(x))
"""


def test_a_failing_process_ends_the_job_with_its_error(tmp_path):
    (tmp_path / "breaks.py").write_text(FAILS_ON_RANK_1)
    cfg = {"seed": 0, "out_dir": str(tmp_path / "run"), "data": {"name": "digits"},
           "model": {"name": "module", "target": "breaks:Net", "stages": ["body.2"]},
           "train": {"epochs": 50, "batch_size": 64, "progress": "off"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "kdlab", "train-teacher", "cfg.yaml"]
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert res.returncode != 0
    assert "rank 1 breaks on purpose" in res.stderr, res.stderr[-2000:]
    # the other process says why it ends: stopped by torchrun, or its collective broken by the failed peer
    assert "kdlab: process 0 of 2: stopped" in res.stderr, res.stderr[-2000:]
    assert res.stderr.count("internal error") == 1  # rank 1's own; rank 0 names the cause
    assert took < 120, took  # not the 30-minute collective timeout
