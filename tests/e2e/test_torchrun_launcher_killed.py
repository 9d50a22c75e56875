"""SIGKILL of torchrun (its elastic agent) ends its workers too, during start-up and mid-training, and the run
then resumes: no worker is left orphaned (waiting for the launcher's store for the process group's 30-minute
timeout, or training on and writing checkpoints)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from free_port import free_port
from processes import SLOW_NET, alive, descendants, kill_all, wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")

EPOCHS = 10
GONE_WITHIN = 10.0


def _job(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    (tmp_path / "slow.py").write_text(SLOW_NET)
    cfg = {"seed": 0, "out_dir": str(tmp_path / "run"),
           "data": {"name": "mixed-feature", "num_train": 48, "num_test": 24},
           "model": {"name": "module", "target": "slow:Net", "stages": ["body.2"]},
           "train": {"epochs": EPOCHS, "batch_size": 16, "progress": "off"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC_")}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", "-m", "kdlab", "train-teacher", "cfg.yaml"]
    return cmd, env


def _kill_launcher_when(tmp_path: Path, ready, slow_step: str) -> None:
    """Start the job in a session of its own, SIGKILL torchrun once ``ready(workers)``, and check that every
    process it started is gone within GONE_WITHIN seconds; whatever is left is killed here."""
    cmd, env = _job(tmp_path)
    log = tmp_path / "first.log"
    seen: dict[int, int] = {}
    with log.open("w") as out:
        launcher = subprocess.Popen(cmd, cwd=tmp_path, env={**env, "SLOW_STEP": slow_step}, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def workers():
            seen.update(descendants(launcher.pid))
            now = descendants(launcher.pid)
            return now if len(now) >= 2 and ready(now) else None

        assert wait_for(workers, 240), f"the workers never got ready:\n{log.read_text()[-3000:]}"
        seen.update(descendants(launcher.pid))  # the workers and whatever they started
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        killed = time.monotonic()
        wait_for(lambda: not alive(seen), GONE_WITHIN, every=0.1)
        left = alive(seen)
        assert not left, (f"{len(left)} of the {len(seen)} processes torchrun started still run "
                          f"{time.monotonic() - killed:.0f} s after it was killed: {left}")
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        kill_all(seen)


def _resumes(tmp_path: Path) -> None:
    cmd, env = _job(tmp_path)
    res = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == sorted(set(epochs)) and len(epochs) == EPOCHS, epochs


def _torch_loaded(workers: dict[int, int]) -> bool:
    """Every worker has torch's library mapped: past kdlab's start, on its way to the process group."""
    try:
        return all("libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text() for pid in workers)
    except OSError:
        return False


def test_workers_end_with_torchrun_killed_as_they_start(tmp_path):
    # the interpreters are still starting: the launcher is gone before kdlab can tie its process to it
    _kill_launcher_when(tmp_path, lambda workers: True, slow_step="0.6")


def test_workers_end_with_torchrun_killed_during_start_up(tmp_path):
    # torch is loaded: kdlab has tied the workers to the launcher; they go on to wait for the launcher's store
    _kill_launcher_when(tmp_path, _torch_loaded, slow_step="0.6")


@pytest.mark.slow  # two torchrun jobs: 43-73 s on a busy 2-core machine; the start-up cases check the tie in CI
def test_workers_end_with_torchrun_killed_mid_training(tmp_path):
    metrics = tmp_path / "run" / "metrics.jsonl"

    def trained_an_epoch(workers) -> bool:  # noqa: ARG001
        return metrics.exists() and metrics.read_text().endswith("\n")

    _kill_launcher_when(tmp_path, trained_an_epoch, slow_step="0.6")
    assert 0 < len(metrics.read_text().splitlines()) < EPOCHS
    _resumes(tmp_path)
