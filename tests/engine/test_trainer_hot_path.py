"""Work the loop must not do twice or in the step: epoch plans, copies of teacher outputs, test predictions,
device-to-host waits; and the runtime settings that must come before any CUDA work."""

import os
import socket

import pytest
import torch
import torch.distributed as dist

import kdlab.runs as runs
import kdlab.runs.student as student_runs
from conftest import TINY_TRAIN, student_cfg, teacher_cfg
from kdlab.config import TeacherRunConfig, load_config
from kdlab.core.distributed import DistEnv
from kdlab.core.state import LoopState
from kdlab.data import load_dataset
from kdlab.data.base import ArrayLoader, batch_count, batch_plan
from kdlab.engine import trainer
from kdlab.engine.trainer import wrap
from kdlab.methods import build_distill_objective, build_teacher_objective
from kdlab.models import build_model


@pytest.mark.fast
def test_batch_count_is_the_length_of_the_plan():
    for n in range(0, 41):
        for bs in range(1, 13):
            for drop_last in (False, True):
                for world in (1, 2, 3, 4):
                    if bs < world:
                        continue
                    plan = batch_plan(n, bs, torch.arange(n), drop_last, (0, world))
                    assert batch_count(n, bs, drop_last, world) == len(plan), (n, bs, drop_last, world)


def test_the_epoch_plan_is_not_rebuilt_for_every_warm_up_step(tmp_path, monkeypatch):
    calls = []
    original = ArrayLoader.__len__

    def counting(self):
        if self.shuffle:
            calls.append(1)
        return original(self)

    monkeypatch.setattr(ArrayLoader, "__len__", counting)
    runs.train_teacher(teacher_cfg(tmp_path / "t", schedule={"name": "constant", "warmup_epochs": 2},
                                   train={**TINY_TRAIN, "epochs": 2}))
    assert 1 <= len(calls) <= 2  # 6 warm-up steps per epoch: once per step would be 12 or more


def _tiny(name):
    data = load_dataset(load_config(TeacherRunConfig, teacher_cfg("x")).data)
    torch.manual_seed(0)
    return data, build_model(name, {}, data.num_classes, data.input_shape)


def test_teacher_outputs_are_used_as_the_teacher_returns_them():
    data, teacher = _tiny("resnet8")
    student = build_model("resnet8", {}, data.num_classes, data.input_shape)
    teacher.requires_grad_(False).eval()
    spec = type("Spec", (), {"name": "at", "params": {}})()
    obj = build_distill_objective(spec, teacher, student, data)
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append(o))
    batch = next(iter(data.train_loader(16, torch.device("cpu")).epoch(0)))
    out = obj.teacher_outputs(batch)
    assert not out.logits.is_inference() and not out.logits.requires_grad
    # the very tensors the teacher returned: no copy of any feature
    assert out.logits.data_ptr() == seen[-1].logits.data_ptr()
    assert [f.data_ptr() for f in out.stages] == [f.data_ptr() for f in seen[-1].stages]
    loss = obj(student, batch, LoopState(0, 2, 0, 1, len(data.train), data.num_classes, torch.device("cpu"))).loss
    loss.backward()  # the student's loss may be saved for backward with them
    assert student.classifier.weight.grad is not None


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_the_test_set_is_predicted_once_at_the_end(tmp_path, monkeypatch, role):
    passes = []
    original = trainer.fit_group

    def fit_group(members, data, **kw):
        for member in members:
            member.model.register_forward_pre_hook(
                lambda m, args: passes.append(args[0].shape[0]) if not m.training else None)
        return original(members, data, **kw)

    monkeypatch.setattr(trainer, "fit_group", fit_group)
    monkeypatch.setattr(student_runs, "fit_group", fit_group)
    data = {"name": "digits"}  # no p* and no holdout: eval-mode passes are test-set passes only
    train = {**TINY_TRAIN, "epochs": 2, "eval_batch_size": 1000}
    teacher = runs.train_teacher(teacher_cfg(tmp_path / "t", data=data, model="mlp", train=train))
    if role == "student":
        passes.clear()
        res = runs.distill(student_cfg(tmp_path / "s", teacher.run_dir, data=data, student="mlp", train=train))
        assert "cka_teacher_student" in res.summary
    n_test = 450
    assert passes == [n_test, n_test]  # one per epoch; the summary reuses the last one


def test_kdplus_step_does_not_wait_for_the_device(monkeypatch):
    data, teacher = _tiny("resnet8")
    student = build_model("resnet8", {}, data.num_classes, data.input_shape)
    teacher.requires_grad_(False).eval()
    spec = type("Spec", (), {"name": "kdplus", "params": {"mix": ["mixup", "cutmix", "noise"]}})()
    obj = build_distill_objective(spec, teacher, student, data)
    batch = next(iter(data.train_loader(16, torch.device("cpu")).epoch(0)))
    state = LoopState(0, 2, 5, 1, len(data.train), data.num_classes, torch.device("cpu"), seed=3)

    def refuse(self, *a, **k):
        raise AssertionError("a tensor was read on the host during the step")

    monkeypatch.setattr(torch.Tensor, "__bool__", refuse)
    monkeypatch.setattr(torch.Tensor, "item", refuse)
    out = obj(student, batch, state)
    monkeypatch.undo()
    assert torch.isfinite(out.loss) and out.parts["ood"] > 0


@pytest.mark.parametrize("deterministic", [True, False])
def test_runtime_settings_come_before_the_teacher_is_loaded(tmp_path, monkeypatch, trained_teacher, deterministic):
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
              os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    torch.use_deterministic_algorithms(not deterministic)
    torch.backends.cudnn.benchmark = deterministic
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = {}
    original = student_runs.load_teacher

    def load_teacher(*a, **k):
        seen.update(det=torch.are_deterministic_algorithms_enabled(), bench=torch.backends.cudnn.benchmark,
                    cublas=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
        return original(*a, **k)

    monkeypatch.setattr(student_runs, "load_teacher", load_teacher)
    try:
        runs.distill(student_cfg(tmp_path / "s", trained_teacher.run_dir,
                                 train={**TINY_TRAIN, "epochs": 1, "deterministic": deterministic}))
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
    assert seen["det"] is deterministic and seen["bench"] is (not deterministic)  # benchmark: the fast GPU path
    if deterministic:
        assert seen["cublas"] == ":4096:8"


def _one_process_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


@pytest.mark.parametrize("method", ["soteacher", "crd", "ab", "fitnet"])
def test_ddp_leaves_gathered_state_alone_and_searches_unused_parameters_only_when_needed(method, trained_teacher):
    data, model = _tiny("resnet8x4")  # wider than the resnet8 teacher: AB needs trainable connectors
    train = load_config(TeacherRunConfig, teacher_cfg("x")).train
    if method == "soteacher":
        spec = type("Spec", (), {"name": "soteacher", "params": {}})()
        obj = build_teacher_objective(spec, model, data, epochs=2)
        gathered = {"objective.consistency.visits", "objective.consistency.average"}
    else:
        teacher, _ = runs.load_teacher(runs.TeacherRef(path=str(trained_teacher.run_dir)), data, torch.device("cpu"))
        params = {"nce_k": 16} if method == "crd" else {}
        spec = type("Spec", (), {"name": method, "params": params})()
        obj = build_distill_objective(spec, teacher, model, data)
        gathered = {"objective.memory.student", "objective.memory.teacher", "objective.memory.keys"} \
            if method == "crd" else set()
    _one_process_group()
    try:
        step = wrap(model, obj, train, torch.device("cpu"), DistEnv(0, 2, 0))  # DDP, as in a 2-process job
        assert set(step.parameters_to_ignore) == gathered
        big = {id(b) for name, b in obj.named_buffers() if f"objective.{name}" in gathered}
        assert not any(id(b) in big for b in step.modules_buffers)  # never broadcast
        assert any(True for _ in step.modules_buffers)  # the model's BN statistics still are
        # AB's connectors are used in its initialisation stage only; the others use every parameter in each step
        assert step.find_unused_parameters is (method == "ab")
    finally:
        dist.destroy_process_group()
