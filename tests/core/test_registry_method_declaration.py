"""One declaration per method parameter: a method's ``Params`` class declares every parameter (default, type,
description) and its ``__init__`` takes only ``(params, ctx)``; the context is an explicit object whose misspelt
fields are errors; a new method is one self-contained class plus its test settings."""

import inspect
import json
import math

import pytest
import torch.nn as nn
from pydantic import Field

from conftest import TINY_DATA, TINY_TRAIN
from kdlab.core.registry import DISTILL_METHODS, TEACHER_METHODS, register_distill_method
from kdlab.methods.context import DistillContext, TeacherContext
from kdlab.methods.distiller import Distiller, DistillerParams
from kdlab.runs.student import distill
from kdlab.runs.teacher import train_teacher

METHODS = [(DISTILL_METHODS, n) for n in DISTILL_METHODS.names()] + \
          [(TEACHER_METHODS, n) for n in TEACHER_METHODS.names()]


def _init_signature(obj) -> inspect.Signature:
    for klass in obj.__mro__:
        if "__init__" in klass.__dict__:
            return inspect.signature(klass.__init__)
    raise AssertionError(obj)


@pytest.mark.parametrize("registry, name", METHODS, ids=[f"{r.kind}:{n}" for r, n in METHODS])
def test_every_parameter_is_declared_once(registry, name):
    entry = registry.get(name)
    taken = [p for p in _init_signature(entry.obj).parameters if p != "self"]
    assert taken == ["params", "ctx"], f"{name}: __init__ takes {taken}; declare parameters in Params"
    # the registry's schema is the method's own Params class (none: a method without parameters)
    assert entry.params is getattr(entry.obj, "Params", entry.params)
    # every declared parameter reaches the method: the defaults build a valid Params object
    if not any(f.is_required() for f in entry.params.model_fields.values()):
        entry.validate({})


def test_a_method_with_parameters_in_its_signature_cannot_register():
    class Old(nn.Module):
        def __init__(self, teacher=None, T: float = 4.0):
            super().__init__()

    with pytest.raises(ValueError, match=r"__init__ must take \(params, ctx\)"):
        register_distill_method("test-old-style")(Old)
    assert "test-old-style" not in DISTILL_METHODS


def test_a_misspelt_context_field_is_an_error():
    class Misspelt(Distiller):
        def __init__(self, params, ctx):
            super().__init__(params, ctx)
            self.path = ctx.teacher_pth  # misspelt: teacher_path

    with pytest.raises(AttributeError, match="teacher_pth"):
        Misspelt(DistillerParams(), DistillContext(teacher=nn.Linear(2, 2)))
    # the context is explicit: an unknown name given to a method's build is an error too, not dropped
    with pytest.raises(TypeError, match="teacher_pth"):
        DISTILL_METHODS.get("kd").build({}, teacher=nn.Linear(2, 2), teacher_pth="x")
    with pytest.raises(TypeError):
        TEACHER_METHODS.get("standard").build({}, modle=nn.Linear(2, 2))
    with pytest.raises(AttributeError):
        TeacherContext().checkpoint = None  # frozen


# ---- a new method: its class (here, in the test file) and its test settings, nothing else ----

class LogitMSEParams(DistillerParams):
    scale: float = Field(1.0, gt=0, description="the logits are divided by this before the squared error")


class LogitMSE(Distiller):
    """Test method: CE + KD + beta * mean squared error between the scaled logits of student and teacher."""

    Params = LogitMSEParams
    BETA = {"standard": 0.5, "soteacher": 0.25}
    needs_features = False

    def __init__(self, params: LogitMSEParams, ctx: DistillContext):
        super().__init__(params, ctx)
        self.scale = params.scale

    def method_loss(self, s, t, batch, state):
        return ((s - t) / self.scale).pow(2).mean()


SETTINGS = {"test-logit-mse": {"params": {"scale": 2.0}}}  # what tests/distill_settings/ holds for a method


@pytest.fixture
def example_method():
    register_distill_method("test-logit-mse", needs_teacher=True, paper="-")(LogitMSE)
    yield "test-logit-mse"
    DISTILL_METHODS.unregister("test-logit-mse")  # the registries are process-global


def test_a_new_method_runs_end_to_end(example_method, tmp_path):
    entry = DISTILL_METHODS.get(example_method)
    assert entry.params is LogitMSEParams and set(entry.params.model_fields) >= {"scale", "gamma", "alpha", "T"}
    teacher = train_teacher({"data": dict(TINY_DATA), "model": "resnet8", "out_dir": str(tmp_path / "t"),
                             "train": {**TINY_TRAIN, "epochs": 1}}).run_dir
    cfg = {"data": dict(TINY_DATA), "student": "resnet8", "teacher": {"path": str(teacher)},
           "method": {"name": example_method, **SETTINGS[example_method]["params"]},
           "out_dir": str(tmp_path / "s"), "optim": {"lr": 0.02}, "schedule": {"name": "constant"},
           "train": {**TINY_TRAIN, "epochs": 3}}
    result = distill(cfg)
    hist = [json.loads(x) for x in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    losses = [h["loss"] for h in hist]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    assert "top1" in result.summary
    # the resolved config states every parameter, the method's own and its beta from BETA included
    from kdlab.config.loader import read_yaml

    method = read_yaml(tmp_path / "s" / "config.yaml")["method"]
    assert method["scale"] == 2.0 and method["beta"] == 0.5
