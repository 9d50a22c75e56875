"""kdlab's own torchrun: processes of one job with torchrun's environment, rank 0's result, a failing process
stopping the others with its error, and the processes ending with the process that started them.

The functions the processes run are defined here: the processes import this module by name."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from kdlab.core.errors import DataError
from kdlab.core.processes import ProcessFailed, run_processes
from processes import alive, descendants, wait_for

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "CUDA_VISIBLE_DEVICES")


def environment_and_sum(x: int) -> tuple[dict, int]:
    """This process's torchrun variables, and the sum of ``x + rank`` over the job (gloo)."""
    dist.init_process_group("gloo")
    t = torch.tensor([x + dist.get_rank()])
    dist.all_reduce(t)
    return {k: os.environ.get(k) for k in ENV}, int(t)


def fails_on_rank_1(kdlab_error: bool) -> str:
    """Rank 1 raises; rank 0 waits in a collective that never completes (until it is stopped)."""
    dist.init_process_group("gloo")
    if dist.get_rank() == 1:
        raise DataError("rank 1 has no data") if kdlab_error else ValueError("rank 1 breaks")
    dist.barrier()
    return "unreachable"


def _job(root: int) -> dict[int, int]:
    """The processes below ``root``, but multiprocessing's resource tracker (it lives as long as ``root``)."""
    return {pid: start for pid, start in descendants(root).items()
            if b"resource_tracker" not in _cmdline(pid)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def killed_on_rank_1() -> None:
    if os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)


def test_the_processes_get_torchruns_environment_and_rank_0s_result_comes_back():
    env, total = run_processes(environment_and_sum, (10,), nproc=3, gpus=["5", "6", "7"])
    assert total == 10 + 11 + 12  # the all-reduce joined the three
    assert env == {"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "3",
                   "MASTER_ADDR": "127.0.0.1", "CUDA_VISIBLE_DEVICES": "5,6,7"}


@pytest.mark.parametrize("kdlab_error", [True, False])
def test_a_failing_process_stops_the_others_and_its_error_is_raised(kdlab_error):
    t0 = time.monotonic()
    error = DataError if kdlab_error else ValueError
    with pytest.raises(error) as caught:
        run_processes(fails_on_rank_1, (kdlab_error,), nproc=2)
    assert str(caught.value) == ("rank 1 has no data" if kdlab_error else "rank 1 breaks")  # its one line
    if sys.version_info >= (3, 11):
        assert caught.value.__notes__ == ["raised in process 1 of 2"]
    assert time.monotonic() - t0 < 30  # rank 0, waiting in the barrier, was stopped
    assert not _job(os.getpid())


def test_a_killed_process_is_named_with_its_signal():
    with pytest.raises(ProcessFailed, match=r"^process 1 of 2 was killed by SIGKILL \(the out-of-memory killer"):
        run_processes(killed_on_rank_1, nproc=2, grace=2)
    assert not _job(os.getpid())


def test_more_processes_than_gpus_is_an_error():
    with pytest.raises(Exception, match="2 processes need 2 GPUs, got 1: 0"):
        run_processes(environment_and_sum, (0,), nproc=2, gpus=["0"])


LAUNCHER = """
import sys, time
sys.path[:0] = {path!r}
from kdlab.core.processes import run_processes
print("started", flush=True)
run_processes(time.sleep, (600,), nproc=2)
"""


def test_the_processes_end_with_their_launcher_killed_with_sigkill():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER.format(path=sys.path)], stdout=subprocess.PIPE,
                                text=True)
    try:
        assert launcher.stdout.readline() == "started\n"
        job = wait_for(lambda: (d := _job(launcher.pid)) and len(d) == 2 and d, 60)
        assert job, "the launcher started no processes"
        time.sleep(1)  # the processes have tied themselves to it by now (first thing they do)
        launcher.kill()
        launcher.wait()
        assert wait_for(lambda: not alive(job), 20), "processes outlived their launcher"
    finally:
        launcher.kill()
