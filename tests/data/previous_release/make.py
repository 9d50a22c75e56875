"""How the run folders here were written: by kdlab 0.1.0 at commit 1ca4525 (the release before the layered
package), from a checkout of that commit:

    git worktree add /tmp/prev 1ca4525
    cd tests/data/previous_release && rm -rf teacher student unfinished
    PYTHONPATH=/tmp/prev python make.py

``teacher``: a finished teacher; ``student``: a finished KD student of it; ``unfinished``: a teacher interrupted in
its second epoch (its checkpoint is at epoch 1).  ``tests/runs/test_summary_previous_release.py`` reuses and
resumes them.
"""

import contextlib

import torch

import kdlab
from kdlab.data.base import ArrayLoader
from kdlab.runs import train_teacher
from kdlab.student_runs import distill

torch.set_num_threads(1)
DATA = {"name": "mixed-feature", "num_train": 192, "num_test": 96}
MLP = {"name": "mlp", "hidden": [16]}
TRAIN = {"epochs": 2, "batch_size": 32, "progress": "off", "eval_batch_size": 256, "tensorboard": False}


def teacher(out):
    return {"seed": 0, "out_dir": out, "data": DATA, "model": MLP, "optim": {"lr": 0.05},
            "schedule": {"milestones": [1]}, "train": TRAIN}


if __name__ == "__main__":
    assert kdlab.__file__.startswith("/tmp/prev"), kdlab.__file__
    train_teacher(teacher("teacher"))
    distill({"seed": 0, "out_dir": "student", "data": DATA, "student": MLP, "method": "kd",
             "teacher": {"path": "teacher"}, "optim": {"lr": 0.05}, "schedule": {"milestones": [1]},
             "train": TRAIN})
    original = ArrayLoader.epoch

    def cut(self, e=0):
        for i, b in enumerate(original(self, e)):
            if self.shuffle and e == 1 and i == 2:
                raise KeyboardInterrupt
            yield b

    ArrayLoader.epoch = cut
    with contextlib.suppress(KeyboardInterrupt):
        train_teacher(teacher("unfinished"))
