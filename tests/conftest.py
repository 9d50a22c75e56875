import os

import pytest
import torch

# the tests train tiny models: a second intra-op thread buys nothing there and, on a busy machine, OpenMP threads
# waiting for each other make small kernels many times slower
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the subprocesses some tests start

TINY_DATA = {"name": "mixed-feature", "num_train": 192, "num_test": 96}
TINY_TRAIN = {"epochs": 2, "batch_size": 32, "progress": "off", "eval_batch_size": 256}


def teacher_cfg(out_dir, **kw):
    cfg = {"seed": 0, "out_dir": str(out_dir), "data": dict(TINY_DATA), "model": "resnet8",
           "optim": {"lr": 0.05}, "schedule": {"milestones": [1]}, "train": dict(TINY_TRAIN)}
    cfg.update(kw)
    return cfg


def student_cfg(out_dir, teacher_dir=None, method="kd", **kw):
    cfg = {"seed": 0, "out_dir": str(out_dir), "data": dict(TINY_DATA), "student": "resnet8", "method": method,
           "optim": {"lr": 0.05}, "schedule": {"milestones": [1]}, "train": dict(TINY_TRAIN)}
    if teacher_dir is not None:
        cfg["teacher"] = {"path": str(teacher_dir)}
    cfg.update(kw)
    return cfg


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Runs with a default out_dir write under ./runs: keep them in the test's own folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory):
    """One tiny finished teacher run shared by the tests that only read it."""
    from kdlab.runs.teacher import train_teacher

    out = tmp_path_factory.mktemp("teacher") / "run"
    return train_teacher(teacher_cfg(out, train={**TINY_TRAIN, "save_every": 1}))


def interrupt_training(monkeypatch, epoch: int, step: int):
    """Make training epoch ``epoch`` (0-based) stop with KeyboardInterrupt before batch ``step``, as a user's
    Ctrl-C would; returns the function that undoes it."""
    from kdlab.data.base import ArrayLoader

    original = ArrayLoader.epoch

    def cut(self, e=0):
        for i, b in enumerate(original(self, e)):
            if self.shuffle and e == epoch and i == step:
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(ArrayLoader, "epoch", cut)
    return lambda: monkeypatch.setattr(ArrayLoader, "epoch", original)
