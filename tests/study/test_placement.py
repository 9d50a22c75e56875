"""Where a study's worker processes train on a machine with several GPUs (mocked: the placement is the
``CUDA_VISIBLE_DEVICES`` each worker sets before touching CUDA), and the Ray launcher's retries."""

import os
import time
from collections import Counter

import pytest

from kdlab.study import execute, placement
from kdlab.study.execute import WorkerContext, worker_pool


def _gpu_of_worker(folder: str, workers: int) -> tuple[int, str]:
    # hold this task until every worker holds one: a worker that started early would otherwise take two
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(folder)) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


@pytest.mark.parametrize("workers, expected", [(4, {"0": 1, "1": 1, "2": 1, "3": 1}),
                                               (6, {"0": 2, "1": 2, "2": 1, "3": 1})])
def test_workers_take_the_gpus_in_turn(workers, expected, tmp_path):
    ctx = WorkerContext()
    counter = ctx.Value("i", 0)
    with worker_pool(workers, ctx, 1, ["0", "1", "2", "3"], counter) as pool:
        seen = dict(pool.map(_gpu_of_worker, [str(tmp_path)] * workers, [workers] * workers))
    assert len(seen) == workers and Counter(seen.values()) == expected


@pytest.mark.parametrize("workers, expected", [(2, {"0,1": 1, "2,3": 1}), (3, {"0,1": 2, "2,3": 1})])
def test_with_two_gpus_per_run_each_worker_takes_the_next_two(workers, expected, tmp_path):
    ctx = WorkerContext()
    counter = ctx.Value("i", 0)
    with worker_pool(workers, ctx, 1, placement.gpu_blocks(["0", "1", "2", "3"], 2), counter) as pool:
        seen = dict(pool.map(_gpu_of_worker, [str(tmp_path)] * workers, [workers] * workers))
    assert len(seen) == workers and Counter(seen.values()) == expected


def test_gpu_blocks():
    gpus = ["0", "1", "2", "3", "4"]
    assert placement.gpu_blocks(gpus) == gpus
    assert placement.gpu_blocks(gpus, 2) == ["0,1", "2,3"]  # the fifth is left over
    assert placement.gpu_blocks(gpus, 5) == ["0,1,2,3,4"] and placement.gpu_blocks(gpus, 6) == []


def test_a_listed_cuda_visible_devices_is_what_the_workers_share(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert placement.visible_gpus() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert placement.visible_gpus() == [str(i) for i in range(8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement.visible_gpus() == []


def test_the_study_places_its_workers_and_says_so(monkeypatch):
    seen = []

    def fake_pool(workers, ctx, threads, gpus, counter):
        seen.append((workers, gpus, counter is not None))
        raise RuntimeError("stop here")

    monkeypatch.setattr(execute, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(execute, "worker_pool", fake_pool)
    lines = []
    with pytest.raises(RuntimeError, match="stop here"):
        execute._parallel([], [], 2, lines.append)
    assert seen == [(2, ["0", "1"], True)]
    assert lines == ["2 workers on GPUs 0, 1 (CUDA_VISIBLE_DEVICES), one in turn each"]
