"""The torchvision and user-module adapters: stage discovery, the feature contract, forward_from, weights, errors."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import get_model

from kdlab.errors import CheckpointError, ConfigError
from kdlab.models import build_model
from kdlab.models.adapter import HookedModel

SHAPE = (3, 64, 64)


class TinyNet(nn.Module):
    """A user model: stem, three downsampling stages, a pool and a linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8, skip: bool = False):
        super().__init__()
        self.skip = skip
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(width * 2**i, width * 2 ** (i + 1), 3, 2, 1),
                                                  nn.BatchNorm2d(width * 2 ** (i + 1)), nn.ReLU())
                                    for i in range(3)])
        self.fc = nn.Linear(width * 8, num_classes)

    def forward(self, x):
        s = self.stem(x)
        h = self.body(s)
        if self.skip:  # a connection from the stem straight to the head, jumping over every stage boundary
            h = h + F.adaptive_avg_pool2d(s, h.shape[-1]).repeat(1, 8, 1, 1)
        return self.fc(h.mean((2, 3)))


def make_tiny(classes: int, in_channels: int = 3) -> TinyNet:
    return TinyNet(num_classes=classes, in_channels=in_channels)


def check_contract(model, shape=SHAPE, classes=10):
    x = torch.randn(2, *shape)
    model.eval()
    out = model(x, features=True)
    assert out.logits.shape == (2, classes)
    assert [f.shape[1] for f in out.stages] == model.stage_channels
    assert out.embedding.shape == (2, model.embedding_dim)
    for i in range(1, len(model.stages)):
        assert torch.allclose(model.forward_from(i, out.stages[i - 1]), out.logits, atol=1e-5)
    return out


def test_torchvision_mobilenet_v3_small_finds_one_stage_per_resolution():
    model = build_model("torchvision", {"arch": "mobilenet_v3_small"}, 10, SHAPE)
    assert isinstance(model, HookedModel)
    assert model._stage_names == ["features.0", "features.1", "features.3", "features.8", "features.12"]
    assert model.stage_channels == [16, 16, 24, 48, 576]
    out = check_contract(model)
    assert [f.shape[-1] for f in out.stages] == [32, 16, 8, 4, 2]
    assert model.embedding_dim == 1024  # the input of the last linear layer of torchvision's classifier
    # the adapter views the wrapped modules: the state dict stays torchvision's, under "net."
    assert all(k.startswith("net.") for k in model.state_dict())


def test_torchvision_resnets_are_wrapped_with_true_preactivations(tmp_path):
    net = get_model("resnet18", num_classes=10).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    model = build_model("torchvision", {"arch": "resnet18", "weights": str(path)}, 10, SHAPE).eval()
    out = check_contract(model)
    x = torch.randn(2, *SHAPE)
    assert torch.allclose(model(x), net(x), atol=1e-5)
    assert all(torch.equal(f, p.relu()) for f, p in zip(out.stages, out.preact))


def test_imagenet_resnet_weights_load_and_mismatches_are_one_line_errors(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(get_model("resnet18", num_classes=10).state_dict(), path)
    build_model("imagenet_resnet18", {"weights": str(path)}, 10, SHAPE)
    for params, classes, match in [({"weights": str(tmp_path / "none.pth")}, 10, "not found"),
                                   ({"weights": str(path)}, 20, "fc.weight has shape"),
                                   ({"weights": str(path), "small_input": True}, 10, "conv1.weight has shape")]:
        with pytest.raises(CheckpointError, match=match) as e:
            build_model("imagenet_resnet18", params, classes, SHAPE)
        assert "\n" not in str(e.value)
    torch.save(get_model("resnet34", num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        build_model("imagenet_resnet18", {"weights": str(path)}, 10, SHAPE)


def test_user_module_by_target_honours_the_contract():
    model = build_model("module", {"target": "test_model_adapters:TinyNet", "kwargs": {"width": 4}}, 10, SHAPE)
    assert model._stage_names == ["stem", "body.0", "body.1", "body.2"]
    assert model.stage_channels == [4, 8, 16, 32]
    out = check_contract(model)
    assert torch.equal(out.embedding, out.stages[-1].mean((2, 3)))
    outs, _ = model.forward_stages(out.stages[0], 1)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(outs, out.stages[1:], strict=True))
    # a factory gets num_classes (and in_channels when it names it) from the data set
    model = build_model("module", {"target": "test_model_adapters:make_tiny", "kwargs": {"classes": 5}}, 5,
                        (1, 32, 32))
    check_contract(model, (1, 32, 32), classes=5)


def test_explicit_stages_and_training_gradients():
    params = {"target": "test_model_adapters:TinyNet", "stages": ["stem", "body.1", "body.2"]}
    model = build_model("module", params, 10, SHAPE).train()
    out = model(torch.randn(2, *SHAPE), features=True)
    assert [f.shape[-1] for f in out.stages] == [64, 16, 8]
    (out.logits.sum() + sum(f.mean() for f in out.stages)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_forward_from_runs_only_the_remaining_stages():
    model = build_model("module", {"target": "test_model_adapters:TinyNet"}, 10, SHAPE).train()
    stem_bn = model.net.stem[1]
    before = stem_bn.running_mean.clone()
    h = torch.randn(2, 16, 32, 32, requires_grad=True)
    model.forward_from(2, h).sum().backward()
    assert torch.equal(stem_bn.running_mean, before)  # skipped modules did not run, not even their BN updates
    assert h.grad is not None and stem_bn.weight.grad is None


def test_forward_from_that_cannot_reproduce_the_model_is_a_clear_error():
    model = build_model("module", {"target": "test_model_adapters:TinyNet", "kwargs": {"skip": True}}, 10, SHAPE)
    out = model.eval()(torch.randn(2, *SHAPE), features=True)
    # the stem's output is stage 0 itself, so running from stage 1 is still exact; from stage 2 it is not
    assert torch.allclose(model.forward_from(1, out.stages[0]), out.logits, atol=1e-5)
    with pytest.raises(ConfigError, match="cannot be run from stage 2.*SFTN"):
        model.forward_from(2, out.stages[1])


@pytest.mark.parametrize("name, params, match", [
    ("module", {"target": "no_such_package.nets:make"}, "cannot import 'no_such_package.nets'"),
    ("module", {"target": "torch.nn.Linear"}, "must look like 'package.module:factory'"),
    ("module", {"target": "torch.nn:NoSuchNet"}, "has no attribute 'NoSuchNet'"),
    ("module", {"target": "test_model_adapters:TinyNet", "stages": ["stem", "bdy.0"]}, "no submodule 'bdy.0'"),
    ("module", {"target": "test_model_adapters:TinyNet", "kwargs": {"num_classes": 3}}, "logits of shape"),
    ("torchvision", {"arch": "resnet19"}, "not a torchvision classification model; did you mean"),
])
def test_bad_adapter_parameters_are_one_line_config_errors(name, params, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_model(name, params, 10, SHAPE)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("teacher, student", [("resnet32x4", "ShuffleV2"), ("resnet32x4", "resnet8x2"),
                                              ("vgg13", "vgg8"), ("resnet8", "module")])
def test_sftn_branches_run_on_the_zoo_and_on_adapted_students(teacher, student):
    from kdlab.methods.teacher.sftn import SFTN

    class Data:
        input_shape, num_classes, train, name = (3, 32, 32), 10, range(4), "probe"

    spec = {"name": student, **({"target": "test_model_adapters:TinyNet"} if student == "module" else {})}
    t = build_model(teacher, {}, 10, Data.input_shape)
    obj = SFTN(t, Data(), spec)
    f = t(torch.randn(2, 3, 32, 32), features=True)
    assert obj.pairs
    sum(branch(f.stages[i]).sum() for (i, _), branch in zip(obj.pairs, obj.branches)).backward()
    assert all(p.grad is not None for p in t.stages[1].parameters())  # branch losses reach the teacher
    if student == "module":  # the stages a branch never runs are dropped from the wrapped model too
        assert all(isinstance(branch.student.net.stem, nn.Identity) for branch in obj.branches)
