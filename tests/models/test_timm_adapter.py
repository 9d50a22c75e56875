"""The timm adapter: timm's feature points through forward_intermediates, forward_from by the FX graph (or hooks),
local weights only, errors, SFTN branches and a distillation run."""

import json
import math

import pytest
import timm
import torch
import torch.nn as nn

from conftest import TINY_TRAIN, student_cfg
from kdlab.core.errors import ConfigError
from kdlab.models import build_model
from kdlab.models.adapter import GraphRunner, HookRunner
from kdlab.models.timm_adapter import TimmModel
from kdlab.runs.student import distill

SHAPE = (3, 32, 32)


def resnet10t(**params):
    return build_model("timm", {"arch": "resnet10t", **params}, 10, SHAPE)


def own_forward(net: nn.Module) -> list[str]:
    return [n for n, m in net.named_modules() if "forward" in m.__dict__]


def test_stages_are_timms_feature_points_computed_by_forward_intermediates():
    model = resnet10t().eval()
    net = model.net
    assert isinstance(model, TimmModel) and isinstance(model._from, GraphRunner)
    assert model._stage_names == [f["module"] for f in net.feature_info] == ["act1", "layer1", "layer2", "layer3",
                                                                             "layer4"]
    assert model.stage_channels == [f["num_chs"] for f in net.feature_info]
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        out = model(x, features=True)
        h = net.act1(net.bn1(net.conv1(x)))
        manual = [h]
        h = net.maxpool(h)
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            h = layer(h)
            manual.append(h)
        emb = net.forward_head(net.forward_features(x), pre_logits=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out.stages, manual, strict=True))
    assert torch.allclose(out.embedding, emb, atol=1e-5) and out.embedding.shape == (2, model.embedding_dim)
    assert torch.allclose(out.logits, net(x), atol=1e-5)
    for i in range(1, 5):
        assert torch.allclose(model.forward_from(i, manual[i - 1]), out.logits, atol=1e-5)
    outs, _ = model.forward_stages(manual[1], 2)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(outs, manual[2:], strict=True))
    assert set(model.state_dict()) == {f"net.{k}" for k in net.state_dict()}


def test_forward_from_cuts_the_graph_runs_no_earlier_module_and_patches_nothing():
    model = resnet10t().train()
    out = model(torch.randn(2, *SHAPE), features=True)
    net = model.net
    calls, during = [], []
    # leaf layers: hooks on the modules the graph traces through (conv1 is a Sequential) would not fire
    for name in ("conv1.0", "layer1.0.conv1", "layer2.0.conv1"):
        net.get_submodule(name).register_forward_hook(lambda m, a, o, n=name: calls.append(n))
    net.fc.register_forward_hook(lambda m, a, o: during.append(own_forward(net)))
    before = net.layer1[0].bn1.num_batches_tracked.clone()
    h = out.stages[1].detach().requires_grad_()
    model.forward_from(2, h).sum().backward()
    assert calls == ["layer2.0.conv1"] and torch.equal(net.layer1[0].bn1.num_batches_tracked, before)
    assert during == [[]] and h.grad is not None and net.layer1[0].conv1.weight.grad is None


def test_named_stages_and_one_line_errors():
    model = resnet10t(stages=["layer2", "layer4"])
    assert model.stage_channels == [128, 512]
    model.eval()
    out = model(torch.randn(2, *SHAPE), features=True)
    assert torch.allclose(model.forward_from(1, out.stages[0]), out.logits, atol=1e-5)
    for params, match in [({"stages": ["layer5"]}, "'layer5' is not one of its feature points.*did you mean"),
                          ({"stages": ["layer4", "layer2"]}, "distinct feature points in the model's order"),
                          ({"kwargs": {"pretrained": True}}, "'pretrained' is not accepted.*local weights file"),
                          ({"kwargs": {"features_only": True}}, "'features_only' is not accepted"),
                          ({"arch": "resnet10x"}, "not a timm model; did you mean")]:
        with pytest.raises(ConfigError, match=match) as e:
            build_model("timm", {"arch": "resnet10t", **params}, 10, SHAPE)
        assert "\n" not in str(e.value)


def test_local_weights_load_in_timms_key_names(tmp_path):
    net = timm.create_model("resnet10t", num_classes=10).eval()
    path = tmp_path / "resnet10t.pth"
    torch.save(net.state_dict(), path)
    model = resnet10t(weights=str(path)).eval()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-6)


def test_transformer_forward_from_is_refused_with_the_reason():
    model = build_model("timm", {"arch": "test_vit"}, 10, SHAPE).eval()
    x = torch.randn(2, *SHAPE)
    out = model(x, features=True)
    assert [tuple(f.shape[1:]) for f in out.stages] == [(64, 2, 2)] * 6  # token grids, one per block
    assert torch.allclose(out.logits, model(x), atol=1e-5)
    with pytest.raises(ConfigError, match=r"from stage 1 .*reshapes the output of 'blocks.0' \(\(5, 64\) ->"):
        model.forward_from(1, out.stages[0])


def test_a_model_fx_cannot_trace_runs_forward_from_with_hooks(monkeypatch):
    from torchvision.models.feature_extraction import NodePathTracer

    def untraceable(*args, **kwargs):
        raise TypeError("symbolically traced variables cannot be used as inputs to control flow")

    monkeypatch.setattr(NodePathTracer, "trace", untraceable)
    model = resnet10t().eval()
    assert isinstance(model._from, HookRunner)
    out = model(torch.randn(2, *SHAPE), features=True)
    during = []
    model.net.fc.register_forward_hook(lambda m, a, o: during.append(own_forward(model.net)))
    for i in range(1, 5):
        assert torch.allclose(model.forward_from(i, out.stages[i - 1]), out.logits, atol=1e-5)
    assert during == [[]] * 4


def test_sftn_branches_run_on_a_timm_student():
    from kdlab.core.registry import TEACHER_METHODS

    def SFTN(model, data, student, **params):
        return TEACHER_METHODS.get("sftn").build({"student": student, **params}, model=model, data=data)

    class Data:
        input_shape, num_classes, train, name = SHAPE, 10, range(4), "probe"

    t = build_model("resnet8", {}, 10, SHAPE)
    # the teacher's 16x16 stage halves to the student's 8x8 boundary after layer1: the branch runs layer2 .. fc
    obj = SFTN(t, Data(), {"name": "timm", "arch": "resnet10t"}, block_map=[[2, 1]])
    f = t(torch.randn(2, *SHAPE), features=True)
    assert obj.pairs == [(2, 1)]
    sum(branch(f.stages[i]).sum() for (i, _), branch in zip(obj.pairs, obj.branches)).backward()
    assert all(p.grad is not None for p in t.stages[1].parameters())  # branch losses reach the teacher
    student = obj.branches[0].student.net
    assert isinstance(student.act1, nn.Identity) and isinstance(student.layer1, nn.Identity)
    assert student.layer2[0].conv1.weight.grad is not None and student.conv1[0].weight.grad is None


def test_a_timm_student_distils_for_an_epoch(trained_teacher, tmp_path):
    cfg = student_cfg(tmp_path / "run", trained_teacher.run_dir, method="at",
                      student={"name": "timm", "arch": "resnet10t"}, train={**TINY_TRAIN, "epochs": 1})
    result = distill(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and math.isfinite(lines[0]["loss"]), lines
    assert 0 <= result.summary["top1"] <= 100
