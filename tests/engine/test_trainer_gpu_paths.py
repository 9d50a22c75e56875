"""The training loop's GPU-oriented paths, exercised on the CPU as far as PyTorch allows.

bf16 autocast, fp16 with the gradient scaler (a CPU stand-in of the CUDA path), channels-last, ``torch.compile``,
the per-step warm-up, Adam / AdamW, SyncBatchNorm conversion and the CUDA local-rank branch of a torchrun job
(with mocks), plus the command-line of ``benchmarks/gpu_check.py`` (its skip path and its configs).
"""

import copy
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import kdlab.runs.student as student_runs
import kdlab.runs.teacher as kdlab_runs
from conftest import TINY_DATA, TINY_TRAIN, interrupt_training, student_cfg, teacher_cfg
from kdlab.config import DistillRunConfig, TeacherRunConfig, load_config
from kdlab.core import distributed
from kdlab.core.checkpoint import load_checkpoint
from kdlab.core.distributed import DistEnv
from kdlab.core.errors import ConfigError
from kdlab.core.sync_bn import GlobalBatchNorm, convert_sync_batchnorm
from kdlab.data import load_dataset
from kdlab.engine import trainer
from kdlab.engine.trainer import OptimizerStep
from kdlab.methods import build_teacher_objective
from kdlab.models import build_model
from kdlab.regularizers import LipschitzRegularizer
from kdlab.runs.student import distill
from kdlab.runs.teacher import train_teacher

ROOT = Path(__file__).resolve().parents[2]
RGB = {**TINY_DATA, "channels": 3}  # 3x8x8 images: channels-last differs from the default layout at the input too
STEPS = 6  # 192 training samples / batch 32


def _last(run_dir) -> dict:
    return load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")


def _weights(run_dir) -> dict:
    return _last(run_dir)["model_state"]


def _history(run_dir) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


class FitSpy:
    """Wraps the training loop (``fit_group``, which teacher and student runs call): keeps the model's state when
    training starts and records, during training steps, the output dtype of every Linear layer and the memory
    format of the inputs of Conv2d layers."""

    def __init__(self, monkeypatch):
        self.initial: list[dict] = []
        self.linear_dtypes: set[torch.dtype] = set()
        self.conv_inputs_channels_last: set[bool] = set()
        real = trainer.fit_group

        def fit_group(members, data, **kw):
            handles = []
            for member in members:
                model = member.model
                self.initial.append({k: v.detach().clone() for k, v in model.state_dict().items()})
                handles += [m.register_forward_hook(self._linear) for m in model.modules()
                            if isinstance(m, nn.Linear)]
                handles += [m.register_forward_pre_hook(self._conv) for m in model.modules()
                            if isinstance(m, nn.Conv2d)]
            try:
                return real(members, data, **kw)
            finally:
                for h in handles:
                    h.remove()

        monkeypatch.setattr(trainer, "fit_group", fit_group)
        monkeypatch.setattr(student_runs, "fit_group", fit_group)

    def _linear(self, module, inputs, out):
        if module.training and torch.is_grad_enabled():
            self.linear_dtypes.add(out.dtype)

    def _conv(self, module, inputs):
        x = inputs[0]
        if module.training and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:  # layouts are distinguishable
            self.conv_inputs_channels_last.add(x.is_contiguous(memory_format=torch.channels_last)
                                               and not x.is_contiguous())


def _assert_trained_and_finite(run_dir, initial: dict) -> dict:
    w = _weights(run_dir)
    for k, v in w.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k
    params = [k for k in w if k.endswith(("weight", "bias"))]
    assert params and all(not torch.equal(w[k], initial[k]) for k in params)
    for rec in _history(run_dir):
        assert math.isfinite(rec["loss"]) and math.isfinite(rec["test_nll"]), rec
    return w


# --- bf16 autocast -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_bf16_autocast_trains_with_finite_weights_and_losses(tmp_path, monkeypatch, trained_teacher, role):
    spy = FitSpy(monkeypatch)
    if role == "teacher":
        make, run = (lambda d, **t: teacher_cfg(d, train={**TINY_TRAIN, **t})), train_teacher
    else:
        make, run = (lambda d, **t: student_cfg(d, trained_teacher.run_dir, train={**TINY_TRAIN, **t})), distill
    run(make(tmp_path / "fp32"))
    assert spy.linear_dtypes == {torch.float32}
    spy.linear_dtypes.clear()
    res = run(make(tmp_path / "bf16", precision="bf16"))
    assert spy.linear_dtypes == {torch.bfloat16}  # the training step ran under bf16 autocast
    assert all(torch.equal(spy.initial[0][k], spy.initial[1][k]) for k in spy.initial[0])  # same start
    w16 = _assert_trained_and_finite(tmp_path / "bf16", spy.initial[1])
    assert _max_diff(w16, _weights(tmp_path / "fp32")) > 1e-4  # bf16 rounding (8-bit mantissa) shows
    assert math.isfinite(res.summary["top1"]) and math.isfinite(res.summary["nll"])


# --- fp16 and the gradient scaler ----------------------------------------------------------------------------------


def test_fp16_with_grad_scaler_runs_on_cpu_as_a_stand_in_for_cuda(tmp_path, monkeypatch):
    # kdlab refuses fp16 on the CPU (check_precision); PyTorch supports fp16 autocast and GradScaler("cpu"), so
    # with the check disabled a CPU run takes the code path a CUDA fp16 run takes
    monkeypatch.setattr(trainer, "check_precision", lambda device, precision: None)
    monkeypatch.setattr(kdlab_runs, "check_precision", lambda device, precision: None)
    monkeypatch.setattr(student_runs, "check_precision", lambda device, precision: None)
    scalers = []

    class RecordingScaler(torch.amp.GradScaler):
        def __init__(self, device="cuda", *args, **kw):
            super().__init__(device, *args, **kw)
            self.device_arg, self.scales = device, []
            scalers.append(self)

        def update(self, *args, **kw):
            super().update(*args, **kw)
            self.scales.append(self.get_scale())

    monkeypatch.setattr(torch.amp, "GradScaler", RecordingScaler)
    spy = FitSpy(monkeypatch)
    train_teacher(teacher_cfg(tmp_path / "fp32"))
    assert scalers == [] and spy.linear_dtypes == {torch.float32}
    spy.linear_dtypes.clear()
    train_teacher(teacher_cfg(tmp_path / "fp16", train={**TINY_TRAIN, "precision": "fp16"}))
    assert spy.linear_dtypes == {torch.float16}
    assert len(scalers) == 1 and scalers[0].device_arg == "cpu"
    scales = scalers[0].scales
    assert len(scales) == 2 * STEPS and all(math.isfinite(s) and s > 0 for s in scales)
    w16 = _assert_trained_and_finite(tmp_path / "fp16", spy.initial[1])
    assert _max_diff(w16, _weights(tmp_path / "fp32")) > 1e-4
    # an approximation of the fp32 run, not another training: the first epoch's mean loss agrees closely
    # (measured: 4e-4 relative)
    l16, l32 = _history(tmp_path / "fp16")[0]["loss"], _history(tmp_path / "fp32")[0]["loss"]
    assert l16 == pytest.approx(l32, rel=1e-2)


def _linear_problem():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    return lin, torch.optim.SGD(lin.parameters(), lr=0.1), torch.randn(8, 4)


def test_optimizer_step_with_scaler_skips_inf_steps_and_unscales_finite_ones():
    lin, opt, x = _linear_problem()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000)
    step = OptimizerStep(opt, scaler)
    start = {n: p.detach().clone() for n, p in lin.named_parameters()}
    hook = lin.weight.register_hook(lambda g: torch.full_like(g, float("inf")))  # an fp16 overflow
    step(lin(x).pow(2).mean())
    hook.remove()
    for n, p in lin.named_parameters():
        assert torch.equal(p.detach(), start[n]), n  # the step was skipped
    assert scaler.get_scale() == 512.0  # and the scale backed off (factor 0.5)
    loss = lin(x).pow(2).mean()
    grads = torch.autograd.grad(loss, list(lin.parameters()), retain_graph=True)
    step(loss)
    for (n, p), g in zip(lin.named_parameters(), grads):
        # the gradient reached SGD unscaled (the loss was multiplied by 512 for backward)
        torch.testing.assert_close(p.detach(), start[n] - 0.1 * g, rtol=1e-6, atol=1e-7)
        assert not torch.equal(p.detach(), start[n])
    assert scaler.get_scale() == 512.0  # no growth before growth_interval finite steps


def test_optimizer_step_without_scaler_is_a_plain_step():
    lin, opt, x = _linear_problem()
    start = [p.detach().clone() for p in lin.parameters()]
    loss = lin(x).pow(2).mean()
    grads = torch.autograd.grad(loss, list(lin.parameters()), retain_graph=True)
    for p in lin.parameters():
        p.grad = torch.ones_like(p)  # stale gradients are dropped, not accumulated
    OptimizerStep(opt)(loss)
    for p, s, g in zip(lin.parameters(), start, grads):
        torch.testing.assert_close(p.detach(), s - 0.1 * g)


def test_fp16_on_cpu_is_a_one_line_config_error(tmp_path, capsys):
    from kdlab.cli.main import main

    train = {**TINY_TRAIN, "precision": "fp16", "device": "cpu"}
    with pytest.raises(ConfigError) as e:
        train_teacher(teacher_cfg(tmp_path / "api", train=train))
    msg = str(e.value)
    assert msg.startswith("train.precision:") and "\n" not in msg and "bf16" in msg
    code = main(["train-teacher", "data=mixed-feature", "data.num_train=64", "data.num_test=32", "model=resnet8",
                 "train.epochs=1", "train.precision=fp16", "train.device=cpu", "train.progress=off",
                 f"out_dir={tmp_path / 'cli'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("kdlab: error: train.precision:"), err


def test_fp16_on_cpu_error_leaves_no_run_folder_behind(tmp_path):
    cfg = teacher_cfg(tmp_path / "r", train={**TINY_TRAIN, "precision": "fp16", "device": "cpu"})
    with pytest.raises(ConfigError):
        train_teacher(cfg)
    assert not (tmp_path / "r").exists()


# --- channels-last -------------------------------------------------------------------------------------------------


def test_channels_last_gives_the_weights_of_the_default_memory_format(tmp_path, monkeypatch):
    spy = FitSpy(monkeypatch)
    train_teacher(teacher_cfg(tmp_path / "t", data=RGB))
    assert spy.conv_inputs_channels_last == {False}
    spy.conv_inputs_channels_last.clear()
    train_teacher(teacher_cfg(tmp_path / "t_cl", data=RGB, train={**TINY_TRAIN, "channels_last": True}))
    assert spy.conv_inputs_channels_last == {True}  # every convolution (from the input on) saw NHWC tensors
    assert _max_diff(_weights(tmp_path / "t"), _weights(tmp_path / "t_cl")) <= 1e-5  # measured: 5e-7
    # a feature method (FitNets' hint regressor is a convolution of the objective, converted too); one epoch: its
    # beta = 100 hint loss amplifies the kernels' different rounding to 7e-5 by the end of a second epoch
    one = {**TINY_TRAIN, "epochs": 1}
    spy.conv_inputs_channels_last.clear()
    distill(student_cfg(tmp_path / "s", tmp_path / "t", method="fitnet", data=RGB, train=one))
    distill(student_cfg(tmp_path / "s_cl", tmp_path / "t", method="fitnet", data=RGB,
                        train={**one, "channels_last": True}))
    assert spy.conv_inputs_channels_last == {False, True}
    assert _max_diff(_weights(tmp_path / "s"), _weights(tmp_path / "s_cl")) <= 1e-5  # measured: 8e-7


# --- torch.compile -------------------------------------------------------------------------------------------------

# Compiled (TorchInductor) kernels fuse operations and sum in another order than eager ones: each step differs in
# the last float32 bits (measured: 7e-6 on a gradient of size 2).  Training amplifies that, and a ReLU unit or a
# max that flips on such a difference changes one step's gradient by ~1e-2: over 12 steps the weights then differ
# by up to ~3e-3 (measured on FitNets with 3-channel data; 5e-7 for the teacher and 8e-6 for FitNets here).  So:
# weights within 1e-2 (3x the worst case measured, and 1/10 of how far training moves them), logged losses within
# 1e-3 relative (measured: at most 5e-6) and the same test accuracy to one sample.
COMPILE_WEIGHT_TOL = 1e-2
COMPILE_LOSS_RTOL = 1e-3


def _record_compile(monkeypatch, backend: str) -> list:
    """Record what kdlab compiles; compile it with ``backend``."""
    compiled, real = [], torch.compile

    def spy(model, *args, **kw):
        compiled.append((model, args, kw))
        return real(model, *args, **{**kw, "backend": backend})

    monkeypatch.setattr(torch, "compile", spy)
    return compiled


def _assert_close_to_eager(eager_dir, compiled_dir, initial: dict, top1_eager: float, top1_compiled: float):
    we = _weights(eager_dir)
    wc = _assert_trained_and_finite(compiled_dir, initial)
    assert _max_diff(we, wc) <= COMPILE_WEIGHT_TOL
    assert _max_diff(we, initial) >= 10 * COMPILE_WEIGHT_TOL  # the tolerance is small against the training
    he, hc = _history(eager_dir), _history(compiled_dir)
    assert [r["loss"] for r in hc] == pytest.approx([r["loss"] for r in he], rel=COMPILE_LOSS_RTOL)
    assert abs(top1_compiled - top1_eager) <= 100 / TINY_DATA["num_test"] + 1e-9


# "aot_eager" traces the model with TorchDynamo and AOTAutograd (graph capture of the contract's forward, the
# features=True outputs, batch-norm buffer updates) and runs the captured graphs with eager kernels: the part of
# torch.compile that kdlab's code can break, in seconds.  "inductor" (train.compile's default backend) also
# generates and compiles C++ kernels with gcc: 17-37 s per test here with a cold cache, 1-4 s warm; each stays
# under a minute, so both run in CI.
BACKENDS = ["aot_eager", "inductor"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_teacher_run_is_close_to_the_eager_run(tmp_path, monkeypatch, trained_teacher, backend):
    compiled = _record_compile(monkeypatch, backend)
    spy = FitSpy(monkeypatch)
    res = train_teacher(teacher_cfg(tmp_path / "c", train={**TINY_TRAIN, "save_every": 1, "compile": True}))
    assert len(compiled) == 1 and compiled[0][0].kdlab_spec["name"] == "resnet8"  # the trained model, as is
    assert compiled[0][1:] == ((), {})  # train.compile uses torch.compile's defaults (TorchInductor)
    _assert_close_to_eager(trained_teacher.run_dir, tmp_path / "c", spy.initial[0], trained_teacher.summary["top1"],
                           res.summary["top1"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_feature_method_student_is_close_to_the_eager_run(tmp_path, monkeypatch, trained_teacher, backend):
    compiled = _record_compile(monkeypatch, backend)
    spy = FitSpy(monkeypatch)
    eager = distill(student_cfg(tmp_path / "e", trained_teacher.run_dir, method="fitnet"))
    assert compiled == []
    res = distill(student_cfg(tmp_path / "c", trained_teacher.run_dir, method="fitnet",
                              train={**TINY_TRAIN, "compile": True}))
    assert len(compiled) == 1
    _assert_close_to_eager(tmp_path / "e", tmp_path / "c", spy.initial[1], eager.summary["top1"],
                           res.summary["top1"])


# --- warm-up --------------------------------------------------------------------------------------------------------


@pytest.fixture
def step_lrs():
    """The learning rate of every optimizer step taken while the test runs."""
    lrs = []
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    yield lrs
    handle.remove()


def test_warmup_raises_the_lr_linearly_per_step_and_resumes_exactly(tmp_path, monkeypatch, step_lrs):
    lr, warm, epochs = 0.05, 2, 3
    make = lambda d: teacher_cfg(d, optim={"lr": lr}, schedule={"name": "constant", "warmup_epochs": warm},
                                 train={**TINY_TRAIN, "epochs": epochs})
    train_teacher(make(tmp_path / "full"))
    expected = [lr * k / (warm * STEPS) for k in range(1, warm * STEPS + 1)] + [lr] * ((epochs - warm) * STEPS)
    assert step_lrs == pytest.approx(expected, rel=1e-12, abs=0)
    assert all(a < b for a, b in zip(step_lrs[:warm * STEPS], step_lrs[1:warm * STEPS]))
    assert [r["lr"] for r in _history(tmp_path / "full")] == pytest.approx(
        [lr / (warm * STEPS), lr * (STEPS + 1) / (warm * STEPS), lr], rel=1e-12)  # each epoch's first step
    full = list(step_lrs)
    step_lrs.clear()
    restore = interrupt_training(monkeypatch, epoch=1, step=3)  # inside the warm-up, after its first epoch
    with pytest.raises(KeyboardInterrupt):
        train_teacher(make(tmp_path / "cut"))
    restore()
    assert step_lrs == full[:STEPS + 3] and _last(tmp_path / "cut")["epoch"] == 1
    step_lrs.clear()
    train_teacher(make(tmp_path / "cut"), resume=True)
    assert step_lrs == full[STEPS:]  # epoch 2 repeated from its first step, on the warm-up line
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- Adam and AdamW -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_and_adamw_train_and_resume_bit_identically(tmp_path, monkeypatch, name):
    built, real = [], trainer.build_optimizer

    def build(params, cfg):
        built.append(real(params, cfg))
        return built[-1]

    monkeypatch.setattr(trainer, "build_optimizer", build)
    spy = FitSpy(monkeypatch)
    make = lambda d: teacher_cfg(d, optim={"name": name, "lr": 0.003}, schedule={"milestones": [2]},
                                 train={**TINY_TRAIN, "epochs": 3})
    train_teacher(make(tmp_path / "full"))
    assert type(built[0]) is {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    _assert_trained_and_finite(tmp_path / "full", spy.initial[0])
    hist = _history(tmp_path / "full")
    assert hist[-1]["loss"] < hist[0]["loss"]
    restore = interrupt_training(monkeypatch, epoch=2, step=3)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(make(tmp_path / "cut"))
    restore()
    assert _last(tmp_path / "cut")["epoch"] == 2
    train_teacher(make(tmp_path / "cut"), resume=True)
    a, b = _last(tmp_path / "full"), _last(tmp_path / "cut")
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    sa, sb = a["optimizer_state"]["state"], b["optimizer_state"]["state"]
    assert sa.keys() == sb.keys() and all({"exp_avg", "exp_avg_sq"} <= set(s) for s in sa.values())
    for i in sa:  # the moments went on from the checkpoint's, not from zero
        assert all(torch.equal(sa[i][k], sb[i][k]) for k in ("step", "exp_avg", "exp_avg_sq"))


# --- SyncBatchNorm conversion ---------------------------------------------------------------------------------------


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet8", {}, 10, (3, 8, 8))
    with torch.no_grad():  # running statistics away from their initial values
        for _ in range(3):
            model(torch.randn(16, 3, 8, 8))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
    return model


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _convert(device: str):
    original = _bn_model()
    expected_reg = LipschitzRegularizer(original)().item()
    model = copy.deepcopy(original)
    reg = LipschitzRegularizer(model)
    converted = convert_sync_batchnorm(model, torch.device(device))
    reg.bind(converted)  # as place() does
    return original, converted, reg, expected_reg


@pytest.mark.parametrize("device, kind", [("cuda", nn.SyncBatchNorm), ("cpu", GlobalBatchNorm)])
def test_sync_batchnorm_conversion_keeps_every_weight_and_the_lipschitz_term(device, kind):
    original, converted, reg, expected_reg = _convert(device)
    bns = _batch_norms(converted)
    assert len(bns) == len(_batch_norms(original)) == 9 and all(type(m) is kind for m in bns)
    a, b = original.state_dict(), converted.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert {id(m) for m in reg._bns} == {id(m) for m in bns}  # the term reads the new layers
    assert reg().item() == pytest.approx(expected_reg, rel=1e-6)


def test_global_batchnorm_in_one_process_computes_what_batchnorm_computes():
    original, converted, _, _ = _convert("cpu")
    x = torch.randn(16, 3, 8, 8)
    original.eval(), converted.eval()
    with torch.no_grad():
        assert torch.equal(original(x), converted(x))
    original.train(), converted.train()
    out_a, out_b = original(x), converted(x)  # one process: the batch's own statistics
    assert torch.equal(out_a, out_b)
    a, b = original.state_dict(), converted.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # running statistics updated alike
    ga = torch.autograd.grad(out_a.square().mean(), list(original.parameters()))
    gb = torch.autograd.grad(out_b.square().mean(), list(converted.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(ga, gb))


def test_place_converts_for_a_several_process_job_and_rebinds_the_lipschitz_term(tmp_path):
    def setup(sync_bn):
        cfg = load_config(TeacherRunConfig, teacher_cfg(tmp_path, method="soteacher",
                                                        train={**TINY_TRAIN, "sync_bn": sync_bn}))
        data = load_dataset(cfg.data)
        torch.manual_seed(0)
        model = build_model("resnet8", {}, data.num_classes, data.input_shape)
        return cfg, model, build_teacher_objective(cfg.method, model, data, None, 2)

    cfg, model, objective = setup(True)
    before = objective.lipschitz().item()
    placed = trainer.place(model, objective, cfg.train, torch.device("cpu"), DistEnv(rank=0, world=2))
    bns = _batch_norms(placed)
    assert bns and all(type(m) is GlobalBatchNorm for m in bns)
    assert {id(m) for m in objective.lipschitz._bns} == {id(m) for m in bns}
    assert objective.lipschitz().item() == pytest.approx(before, rel=1e-6)
    for sync_bn, world in ((True, DistEnv()), (False, DistEnv(rank=0, world=2))):  # one process / not asked
        cfg, model, objective = setup(sync_bn)
        placed = trainer.place(model, objective, cfg.train, torch.device("cpu"), world)
        assert all(type(m) is nn.BatchNorm2d for m in _batch_norms(placed))


# --- the CUDA local-rank branch of a torchrun job (mocked) ----------------------------------------------------------


@pytest.fixture
def fake_cuda_job(monkeypatch):
    """Rank 1 of 2 on a machine that claims CUDA; records set_device and init_process_group."""
    calls = {"set_device": [], "init": [], "initialized": False}
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(torch.device(d)))

    def init_process_group(backend=None, *args, **kw):
        calls["init"].append(backend)
        calls["initialized"] = True

    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: calls["initialized"])
    return calls


def test_process_device_on_cuda_takes_the_local_rank_gpu_and_nccl(fake_cuda_job):
    assert distributed.env() == DistEnv(rank=1, world=2, local_rank=1)
    assert distributed.process_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert fake_cuda_job["set_device"] == [torch.device("cuda", 1)] and fake_cuda_job["init"] == ["nccl"]
    assert distributed.process_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert fake_cuda_job["init"] == ["nccl"]  # joined once


def test_process_device_on_cpu_joins_gloo(fake_cuda_job):
    assert distributed.process_device(torch.device("cpu")) == torch.device("cpu")
    assert fake_cuda_job["init"] == ["gloo"] and fake_cuda_job["set_device"] == []


def test_fit_in_a_cuda_job_trains_on_the_local_rank_gpu(tmp_path, monkeypatch, fake_cuda_job):
    cfg = load_config(TeacherRunConfig, teacher_cfg(tmp_path / "r"))
    assert cfg.train.device == "auto"
    data = load_dataset(cfg.data)
    model = build_model("resnet8", {}, data.num_classes, data.input_shape)
    objective = build_teacher_objective(cfg.method, model, data, None, 2)
    placed = []

    class Placed(Exception):
        pass

    def place(model, objective, train, device, world):
        placed.append((device, world))
        raise Placed  # no GPU to move the model to: stop here

    monkeypatch.setattr(trainer, "place", place)
    with pytest.raises(Placed):
        trainer.fit(model, objective, data, optim=cfg.optim, schedule=cfg.schedule, train=cfg.train, seed=0)
    assert placed == [(torch.device("cuda", 1), DistEnv(rank=1, world=2, local_rank=1))]
    assert fake_cuda_job["set_device"] == [torch.device("cuda", 1)] and fake_cuda_job["init"] == ["nccl"]


# --- benchmarks/gpu_check.py ----------------------------------------------------------------------------------------


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_gpu_check_without_cuda_prints_one_line_and_exits_0(tmp_path, monkeypatch, capsys):
    gc = _gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gc.main(["--quick", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "CUDA is not available" in out
    assert not (tmp_path / "out").exists()  # nothing written
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the command itself, as a user without a GPU runs it
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.count("\n") == 1 and "CUDA is not available" in res.stdout, res


def test_gpu_check_cases_are_valid_kdlab_configs(tmp_path):
    gc = _gpu_check()
    assert gc.parse_args([]).device == "cuda" and gc.parse_args(["--quick"]).quick
    full, quick = gc.cases(), gc.cases(quick=True)
    assert len(quick) < len(full)
    for todo in (full, quick):
        assert todo[0] == gc.BASE_TEACHER and len({c.name for c in todo}) == len({c.slug for c in todo}) == len(todo)
    methods = {(c.role, c.method) for c in full}
    assert methods == {("teacher", m) for m in ("standard", "soteacher", "sftn")} | \
        {("student", m) for m in ("kd", "crd", "dkd", "fitnet")}
    for role, method in methods:  # every method in every precision, also channels-last, and compiled
        mine = [c for c in full if (c.role, c.method) == (role, method) and not c.resume]
        assert {(c.precision, c.channels_last) for c in mine if not c.compile} == \
            {(p, cl) for p in ("fp32", "bf16", "fp16") for cl in (False, True)}
        assert any(c.compile for c in mine)
    assert any(c.resume for c in quick) and any(c.resume and c.role == "student" for c in full)
    for device in ("cuda", "cpu"):
        for c in full:
            cfg = gc.build_config(c, tmp_path / "data", tmp_path / c.slug, tmp_path / "teacher", device)
            schema = TeacherRunConfig if c.role == "teacher" else DistillRunConfig
            parsed = load_config(schema, cfg)
            t = parsed.train
            assert (t.precision, t.channels_last, t.compile, t.device) == (c.precision, c.channels_last, c.compile,
                                                                           device)
            assert t.deterministic == c.resume and t.epochs == (3 if c.resume else 2)
            assert parsed.method.name == c.method
    assert gc.SIZES["cuda"].shape == (3, 32, 32) and gc.SIZES["cuda"].num_classes == 100


def test_gpu_check_data_is_what_the_arrays_dataset_reads(tmp_path):
    gc = _gpu_check()
    root = gc.write_data(tmp_path / "data", "cpu")
    cfg = load_config(TeacherRunConfig, gc.build_config(gc.BASE_TEACHER, root, tmp_path / "r", device="cpu"))
    data = load_dataset(cfg.data)
    size = gc.SIZES["cpu"]
    assert data.input_shape == size.shape and data.num_classes == size.num_classes
    assert len(data.train) == size.num_train and len(data.test) == size.num_test


@pytest.mark.slow  # about 40 s with a cold TorchInductor cache (the two compiled cases), 10 s warm
def test_gpu_check_runs_its_whole_table_on_the_cpu(tmp_path, capsys):
    gc = _gpu_check()
    assert gc.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| case")]
    assert len(rows) == len(gc.cases(quick=True))
    for c in gc.cases(quick=True):
        row = next(r for r in rows if r.startswith(f"| {c.name} "))
        status = "skipped: fp16 needs CUDA" if c.precision == "fp16" else "ok"
        assert f"| {status} " in row, row
    assert "resume teacher/standard fp32" in out and "0 failed" in out
