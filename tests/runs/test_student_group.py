"""Students of one teacher trained as one group: bit-identical to their separate runs, one teacher pass per batch,
a killed group resumes, a failing member fails alone, the study groups its runs.

The data are CIFAR-100 files in their on-disk format (so batches are augmented: random crops and flips), the
models batch-normalised (the student with dropout, which draws from the global random streams at every step); the
members are every distillation method: logits, features, memories and random negatives (crd), initialisation
stages (fitnet, ab, ft, fsp, ofd's margins, sskd's head), teacher passes of their own (sskd's rotations, kd+'s
mixes, rco's anchors), second trained networks (dml, kdcl) and no teacher at all (none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import kdlab.methods.base as base
import kdlab.runs.student as student_runs
from image_data_files import make_cifar100
from kdlab.analysis.study_command import run_study
from kdlab.core.errors import CheckpointError, ConfigError, DivergenceError
from kdlab.methods import shares_batch_pass
from kdlab.runs.folder import RunFolder
from kdlab.runs.student import distill, distill_group
from kdlab.runs.teacher import train_teacher

# every distillation method, its initialisation stages shortened to one epoch
METHODS = {"kd": "kd", "fitnet": {"name": "fitnet", "init_epochs": 1}, "crd": {"name": "crd", "nce_k": 16},
           "dkd": "dkd", "at": "at", "sskd": {"name": "sskd", "ss_epochs": 1},
           "kdplus": {"name": "kdplus", "mix": ["mixup", "cutmix", "noise"]},
           "ab": {"name": "ab", "init_epochs": 1}, "ft": {"name": "ft", "init_epochs": 1},
           "fsp": {"name": "fsp", "init_epochs": 1}, "ofd": "ofd", "vid": "vid", "sp": "sp", "cc": "cc",
           "rkd": "rkd", "pkt": "pkt", "nst": "nst", "rco": "rco", "none": "none", "dml": "dml", "kdcl": "kdcl",
           "dist": "dist", "ctkd": "ctkd", "reviewkd": "reviewkd"}
NO_TEACHER = ("none", "dml", "kdcl")
TRAIN = {"epochs": 2, "batch_size": 32, "progress": "off", "eval_batch_size": 64, "num_workers": 0,
         "tensorboard": False}
N_TRAIN, N_TEST = 128, 32
STEPS = N_TRAIN // TRAIN["batch_size"] * TRAIN["epochs"]
TEACHER = {"name": "resnet_cifar", "depth": 8, "filters": [8, 8, 16, 16]}
# dropout draws from the global random streams at every step: each member must draw as it does alone
STUDENT = {"name": "wrn", "depth": 10, "width": 1, "dropout": 0.3}
VOLATILE = ("train_time", "group_size")  # how the run was scheduled, not what it computed


def student(root: Path, folder: str, method, **kw) -> dict:
    cfg = {"seed": 0, "out_dir": str(root / folder), "data": {"name": "cifar100", "root": str(root / "data")},
           "teacher": {"path": str(root / "teacher")}, "student": STUDENT, "method": method,
           "optim": {"lr": 0.05}, "schedule": {"milestones": [1]}, "train": dict(TRAIN)}
    cfg.update(kw)
    return cfg


class Counted:
    """Counts the teacher's forward calls (a hook on the loaded teacher) and keeps the group's SharedTeacher."""

    def __init__(self, mp: pytest.MonkeyPatch):
        self.calls, self.shared = 0, []
        original = student_runs.load_teacher

        def load(*a, **kw):
            model, path = original(*a, **kw)
            model.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))
            return model, path

        class Shared(base.SharedTeacher):
            def __init__(inner, *a, **kw):  # noqa: N805
                super().__init__(*a, **kw)
                self.shared.append(inner)

        mp.setattr(student_runs, "load_teacher", load)
        mp.setattr(student_runs, "SharedTeacher", Shared)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The teacher, every method run alone and the same methods as one group (with teacher calls counted)."""
    root = tmp_path_factory.mktemp("group")
    make_cifar100(root / "data", n_train=N_TRAIN, n_test=N_TEST)
    data = {"name": "cifar100", "root": str(root / "data")}
    train_teacher({"seed": 0, "out_dir": str(root / "teacher"), "data": data, "model": TEACHER,
                   "optim": {"lr": 0.05}, "train": {**TRAIN, "epochs": 1, "save_every": 1}})  # rco's anchor
    with pytest.MonkeyPatch.context() as mp:
        alone = Counted(mp)
        for name, method in METHODS.items():
            distill(student(root, f"alone/{name}", method))
    with pytest.MonkeyPatch.context() as mp:
        grouped = Counted(mp)
        results = distill_group([student(root, f"group/{name}", m) for name, m in METHODS.items()])
    return root, alone, grouped, results


def _tensors_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def _log(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(alone: Path, grouped: Path, ignore: tuple[str, ...] = ()) -> None:
    """Weights, objective and optimizer state, log, summary and test predictions: bit for bit."""
    a = torch.load(alone / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(grouped / "checkpoints" / "last.pt", weights_only=False)
    for part in ("model_state", "objective_state", "optimizer_state", "best", "epoch"):
        assert _tensors_equal(a[part], b[part]), (grouped.name, part)
    assert _log(alone) == _log(grouped)
    sa, sb = (json.loads(RunFolder(r).summary_file.read_text()) for r in (alone, grouped))
    for s in (sa, sb):
        for k in (*VOLATILE, *ignore):
            s.pop(k, None)
    assert sa == sb
    for name in ("test_logits.npy", "test_labels.npy"):
        assert np.array_equal(np.load(alone / name), np.load(grouped / name))


def test_every_registered_method_is_grouped_here():
    from kdlab.core.registry import DISTILL_METHODS

    assert set(METHODS) == set(DISTILL_METHODS.names())


@pytest.mark.parametrize("method", list(METHODS))
def test_each_member_is_bit_identical_to_its_run_alone(trained, method):
    root, _, _, results = trained
    assert not any(isinstance(r, BaseException) for r in results), results
    assert_same_run(root / "alone" / method, root / "group" / method)
    assert json.loads(RunFolder(root / "group" / method).summary_file.read_text())["group_size"] == len(METHODS)


def test_the_group_runs_the_teacher_once_per_batch(trained):
    _, alone, grouped, _ = trained
    (shared,) = grouped.shared
    assert shared.passes == STEPS  # one pass per training batch, for every member
    # every member but those whose registry entry says each teacher pass is its own took every batch's pass
    sharing = [name for name, m in METHODS.items() if shares_batch_pass(name)]
    assert "sskd" not in sharing and "rco" not in sharing and "kdplus" in sharing
    assert shared.hits == len(sharing) * STEPS
    # every call of the separate runs is accounted for: a shared request is a call saved, and the summaries
    # predict the teacher's test set once instead of once per member
    test_calls = -(-N_TEST // TRAIN["eval_batch_size"])
    users = len(METHODS) - len(NO_TEACHER)
    assert alone.calls == grouped.calls + shared.hits - shared.passes + (users - 1) * test_calls
    assert grouped.calls < alone.calls / 2


KILLER = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from kdlab.runs.student import distill_group
    calls = []
    def kill(epoch, rec):  # the third member's first epoch checkpoint is on disk: die there, as SIGKILL does
        calls.append(epoch)
        if len(calls) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
    distill_group(json.loads(open(sys.argv[1]).read()), resume=True, hooks=[kill])
""")


def test_a_killed_group_resumes_to_the_weights_of_the_runs_alone(trained):
    root = trained[0]
    names = ["kd", "crd", "sskd", "at"]
    cfgs = [student(root, f"killed/{n}", METHODS[n]) for n in names]
    (root / "killed.json").write_text(json.dumps(cfgs))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", KILLER, str(root / "killed.json"), "3"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == -9, res.stderr[-2000:]
    epochs = [json.loads(line)["epoch"] for n in names
              for line in (root / "killed" / n / "metrics.jsonl").read_text().splitlines()[-1:]]
    assert epochs == [1, 1, 1]  # the fourth member had not finished an epoch: the group resumes staggered
    assert not (root / "killed" / "at" / "checkpoints" / "last.pt").exists()
    results = distill_group(cfgs, resume=True)
    assert not any(isinstance(r, BaseException) for r in results), results
    for n in names:
        assert_same_run(root / "alone" / n, root / "killed" / n)
    again = distill_group(cfgs, resume=True)  # a finished group is read back, not trained
    assert all(r.reused for r in again)


def test_a_diverging_or_failing_member_fails_alone(trained):
    root = trained[0]
    cfgs = [student(root, "failing/kd", "kd", optim={"lr": 1e30}),  # NaN within the first epoch
            student(root, "failing/crd", METHODS["crd"]),
            student(root, "failing/rco", {"name": "rco", "anchors": ["epoch_999"]}),  # no such checkpoint
            student(root, "failing/at", "at")]
    results = distill_group(cfgs)
    assert isinstance(results[0], DivergenceError)
    assert "NaN" in (root / "failing" / "kd" / "error.txt").read_text()
    assert isinstance(results[2], CheckpointError) and "epoch_999" in str(results[2])
    assert not (root / "failing" / "rco").exists()  # a run that cannot start leaves no folder, as alone
    assert not RunFolder(root / "failing" / "kd").summary_file.exists()
    for n in ("crd", "at"):
        assert_same_run(root / "alone" / n, root / "failing" / n)
    # rerun with a sane learning rate in a new folder: the error file belongs to the failed run only
    fixed = distill_group([student(root, "failing/kd-fixed", "kd"), cfgs[1]], resume=True)
    assert fixed[1].reused and not (root / "failing" / "kd-fixed" / "error.txt").exists()


def test_a_group_of_one_is_a_run_alone_and_errors_are_raised(trained):
    root = trained[0]
    (one,) = distill_group([student(root, "one/kd", "kd")])
    assert_same_run(root / "alone" / "kd", one.run_dir)
    with pytest.raises(DivergenceError):
        distill(student(root, "one/nan", "kd", optim={"lr": 1e30}))


@pytest.mark.parametrize("change, field", [({"seed": 1}, "seed"), ({"train": {**TRAIN, "batch_size": 16}}, "train"),
                                           ({"teacher": {"path": "elsewhere"}}, "teacher")])
def test_members_must_share_teacher_seed_data_and_loop(trained, change, field):
    root = trained[0]
    with pytest.raises(ConfigError, match=f"^{field}: "):
        distill_group([student(root, "x/a", "kd"), student(root, "x/b", "at", **change)])
    with pytest.raises(ConfigError, match="same run folder"):
        distill_group([student(root, "x/a", "kd"), student(root, "x/a", "at")])
    assert not (root / "x").exists()


def test_a_study_groups_its_students_and_equals_them_one_at_a_time(tmp_path):
    make_cifar100(tmp_path / "data", n_train=64, n_test=32)
    study = {"seeds": [0], "holdout": 0.0, "data": {"name": "cifar100", "root": str(tmp_path / "data")},
             "teacher": {"model": TEACHER, "methods": {"standard": "standard"}, "train": {**TRAIN, "epochs": 1}},
             "student": {"model": STUDENT, "methods": {"none": "none", "kd": "kd", "at": "at", "crd": METHODS["crd"],
                                                       "fitnet": "fitnet"}, "train": TRAIN}}
    grouped = run_study({**study, "out_dir": str(tmp_path / "grouped"), "group_size": 3}, report=False)
    alone = run_study({**study, "out_dir": str(tmp_path / "alone")}, report=False, group_size=1)
    assert not grouped.failed and not alone.failed
    sizes = sorted(r.metrics.get("group_size", 1) for r in grouped.records if r.kind == "student")
    assert sizes == [1, 1, 3, 3, 3]  # kd, at, crd together; fitnet the second group's only member; none alone
    by_dir = {r.method_label: Path(r.run_dir) for r in alone.records}
    for r in grouped.records:
        if r.kind == "student":
            assert_same_run(by_dir[r.method_label], Path(r.run_dir), ignore=("teacher_path",))  # each study's own
