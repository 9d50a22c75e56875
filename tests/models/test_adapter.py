"""The torchvision and user-module adapters: stage discovery, the feature contract, forward_from, weights, errors."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import get_model

from kdlab.core.errors import CheckpointError, ConfigError
from kdlab.models import build_model
from kdlab.models.adapter import GraphModel, HookedModel, graph_or_hooked
from kdlab.models.torchvision_resnet import TorchvisionResNet, set_stem

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
    assert isinstance(model, GraphModel)
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
    model = build_model("module", {"target": "test_adapter:TinyNet", "kwargs": {"width": 4}}, 10, SHAPE)
    assert model._stage_names == ["stem", "body.0", "body.1", "body.2"]
    assert model.stage_channels == [4, 8, 16, 32]
    out = check_contract(model)
    assert torch.equal(out.embedding, out.stages[-1].mean((2, 3)))
    outs, _ = model.forward_stages(out.stages[0], 1)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(outs, out.stages[1:], strict=True))
    # a factory gets num_classes (and in_channels when it names it) from the data set
    model = build_model("module", {"target": "test_adapter:make_tiny", "kwargs": {"classes": 5}}, 5,
                        (1, 32, 32))
    check_contract(model, (1, 32, 32), classes=5)


def test_explicit_stages_and_training_gradients():
    params = {"target": "test_adapter:TinyNet", "stages": ["stem", "body.1", "body.2"]}
    model = build_model("module", params, 10, SHAPE).train()
    out = model(torch.randn(2, *SHAPE), features=True)
    assert [f.shape[-1] for f in out.stages] == [64, 16, 8]
    (out.logits.sum() + sum(f.mean() for f in out.stages)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_hooked_forward_from_leaves_the_skipped_modules_untouched():
    model = build_model("module", {"target": "test_adapter:TinyNet"}, 10, SHAPE).train()
    assert isinstance(model, HookedModel)
    stem_bn = model.net.stem[1]
    before = stem_bn.running_mean.clone(), stem_bn.num_batches_tracked.clone()
    h = torch.randn(2, 16, 32, 32, requires_grad=True)
    model.forward_from(2, h).sum().backward()
    # the skipped modules ran in eval mode without autograd: no batch-norm update, no gradient, modes restored
    assert torch.equal(stem_bn.running_mean, before[0]) and torch.equal(stem_bn.num_batches_tracked, before[1])
    assert h.grad is not None and stem_bn.weight.grad is None
    assert all(m.training for m in model.modules()) and torch.is_grad_enabled()
    # the remaining stages trained as usual
    assert model.net.body[2][1].num_batches_tracked == 1 and model.net.fc.weight.grad is not None


def test_forward_from_that_cannot_reproduce_the_model_is_a_clear_error():
    model = build_model("module", {"target": "test_adapter:TinyNet", "kwargs": {"skip": True}}, 10, SHAPE)
    out = model.eval()(torch.randn(2, *SHAPE), features=True)
    # the stem's output is stage 0 itself, so running from stage 1 is still exact; from stage 2 it is not
    assert torch.allclose(model.forward_from(1, out.stages[0]), out.logits, atol=1e-5)
    with pytest.raises(ConfigError, match="cannot be run from stage 2.*SFTN"):
        model.forward_from(2, out.stages[1])


@pytest.mark.parametrize("name, params, match", [
    ("module", {"target": "no_such_package.nets:make"}, "cannot import 'no_such_package.nets'"),
    ("module", {"target": "torch.nn.Linear"}, "must look like 'package.module:factory'"),
    ("module", {"target": "torch.nn:NoSuchNet"}, "has no attribute 'NoSuchNet'"),
    ("module", {"target": "test_adapter:TinyNet", "stages": ["stem", "bdy.0"]}, "no submodule 'bdy.0'"),
    ("module", {"target": "test_adapter:TinyNet", "kwargs": {"num_classes": 3}}, "logits of shape"),
    ("torchvision", {"arch": "resnet19"}, "not a torchvision classification model; did you mean"),
])
def test_bad_adapter_parameters_are_one_line_config_errors(name, params, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_model(name, params, 10, SHAPE)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("teacher, student", [("resnet32x4", "ShuffleV2"), ("resnet32x4", "resnet8x2"),
                                              ("vgg13", "vgg8"), ("resnet8", "module")])
def test_sftn_branches_run_on_the_zoo_and_on_adapted_students(teacher, student):
    from kdlab.core.registry import TEACHER_METHODS

    def SFTN(model, data, student, **params):
        return TEACHER_METHODS.get("sftn").build({"student": student, **params}, model=model, data=data)

    class Data:
        input_shape, num_classes, train, name = (3, 32, 32), 10, range(4), "probe"

    spec = {"name": student, **({"target": "test_adapter:TinyNet"} if student == "module" else {})}
    t = build_model(teacher, {}, 10, Data.input_shape)
    obj = SFTN(t, Data(), spec)
    f = t(torch.randn(2, 3, 32, 32), features=True)
    assert obj.pairs
    sum(branch(f.stages[i]).sum() for (i, _), branch in zip(obj.pairs, obj.branches)).backward()
    assert all(p.grad is not None for p in t.stages[1].parameters())  # branch losses reach the teacher
    if student == "module":  # the stages a branch never runs are dropped from the wrapped model too
        assert all(isinstance(branch.student.net.stem, nn.Identity) for branch in obj.branches)


def _modules_with_own_forward(net: nn.Module) -> list[str]:
    return [n for n, m in net.named_modules() if "forward" in m.__dict__]


@pytest.mark.parametrize("name, params", [("module", {"target": "test_adapter:TinyNet"}),
                                          ("torchvision", {"arch": "mobilenet_v3_small"})])
def test_forward_from_assigns_no_forward_on_the_wrapped_modules(name, params):
    model = build_model(name, params, 10, SHAPE).train()
    out = model(torch.randn(2, *SHAPE), features=True)
    during = []
    # looked at while the forward runs: a patch removed afterwards would pass a check made after the call
    model.classifier.register_forward_hook(lambda m, a, o: during.append(_modules_with_own_forward(model.net)))
    for i in range(1, len(model.stages)):
        model.forward_from(i, out.stages[i - 1].detach()).sum().backward()
    assert during == [[]] * (len(model.stages) - 1)
    assert _modules_with_own_forward(model.net) == []


def _manual_mobilenet_stages(net, x, picks):
    outs = []
    for i, layer in enumerate(net.features):
        x = layer(x)
        if i in picks:
            outs.append(x)
    return outs


def test_fx_path_gives_the_stage_features_of_manual_computation_and_of_the_probe():
    net = get_model("mobilenet_v3_small", num_classes=10)
    fx_model = GraphModel(net, SHAPE, 10).eval()
    probed = HookedModel(net, SHAPE, 10).eval()  # the same modules, seen by hooks
    assert fx_model._stage_names == probed._stage_names
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        a, b = fx_model(x, features=True), probed(x, features=True)
        manual = _manual_mobilenet_stages(net, x, [0, 1, 3, 8, 12])
    for fa, fb, fm in zip(a.stages, b.stages, manual, strict=True):
        assert torch.allclose(fa, fm, atol=1e-6) and torch.allclose(fb, fm, atol=1e-6)
    assert torch.allclose(a.logits, b.logits, atol=1e-6) and torch.allclose(a.embedding, b.embedding, atol=1e-6)
    for i in range(1, 5):
        assert torch.allclose(fx_model.forward_from(i, manual[i - 1]), probed.forward_from(i, manual[i - 1]),
                              atol=1e-5)


def test_fx_path_on_a_small_input_resnet18_matches_the_explicit_wrapper_with_preactivations():
    net = get_model("resnet18", num_classes=10)
    set_stem(net, 3, small_input=True)
    explicit = TorchvisionResNet(net).eval()
    fx_model = GraphModel(net, (3, 32, 32), 10, stages=["relu", "layer1", "layer2", "layer3", "layer4"]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = fx_model(x, features=True), explicit(x, features=True)
    assert [f.shape[-1] for f in a.stages] == [32, 32, 16, 8, 4]
    for name in ("stages", "preact"):
        assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(getattr(a, name), getattr(b, name), strict=True))
    # the FX graph finds the true pre-activations: the stem's BN output and each layer's residual sum
    assert all((p < 0).any() and torch.equal(f, p.relu()) for f, p in zip(a.stages, a.preact))
    assert torch.allclose(a.embedding, b.embedding, atol=1e-5) and torch.allclose(a.logits, b.logits, atol=1e-5)
    for i in range(1, 5):
        assert torch.allclose(fx_model.forward_from(i, b.stages[i - 1]), b.logits, atol=1e-5)
    outs, pres = fx_model.forward_stages(b.stages[1], 2)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(pres, b.preact[2:], strict=True))


def test_fx_forward_from_does_not_run_the_stages_before_it():
    model = build_model("torchvision", {"arch": "mobilenet_v3_small"}, 10, SHAPE).train()
    out = model(torch.randn(2, *SHAPE), features=True)
    calls = []
    for name in ("features.0.0", "features.1.block.0.0", "features.2.block.0.0"):
        model.net.get_submodule(name).register_forward_hook(lambda m, a, o, n=name: calls.append(n))
    bn = model.net.features[1].block[0][1]
    before = bn.num_batches_tracked.clone()
    h = out.stages[1].detach().requires_grad_()
    model.forward_from(2, h).sum().backward()
    # features.2 lies between stage 1 (features.1) and stage 2 (features.3): it belongs to the rest of the model
    assert calls == ["features.2.block.0.0"]
    assert torch.equal(bn.num_batches_tracked, before) and h.grad is not None


class Mode(nn.Module):
    """A model whose forward branches on self.training (FX bakes such a branch into the graph it traces)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = TinyNet(num_classes)

    def forward(self, x):
        logits = self.net(x)
        return logits * 2 if self.training else logits


def test_fx_path_traces_train_and_eval_mode_apart():
    net = Mode()
    model = GraphModel(net, SHAPE, 10)
    x = torch.randn(2, *SHAPE)
    for mode in (True, False):
        model.train(mode)
        torch.manual_seed(0)
        with torch.no_grad():
            want = net(x)
            assert torch.allclose(model(x, features=True).logits, want, atol=1e-5)


def test_fx_forward_from_over_a_skip_connection_names_what_crosses_the_boundary():
    model = GraphModel(TinyNet(skip=True), SHAPE, 10).eval()
    out = model(torch.randn(2, *SHAPE), features=True)
    assert torch.allclose(model.forward_from(1, out.stages[0]), out.logits, atol=1e-5)
    with pytest.raises(ConfigError, match=r"cannot be run from stage 2.*reads stem\.2 from before it"):
        model.forward_from(2, out.stages[1])


class Untraceable(TinyNet):
    def forward(self, x):
        if x.mean() > 100:  # data-dependent control flow: symbolic tracing cannot decide it
            x = x * 0
        return super().forward(x)


def test_models_fx_cannot_trace_fall_back_to_hooks():
    model = graph_or_hooked(Untraceable(), SHAPE, 10, None, "untraceable")
    assert isinstance(model, HookedModel)
    check_contract(model)
    assert isinstance(graph_or_hooked(TinyNet(), SHAPE, 10, None, "tiny"), GraphModel)


def test_fx_models_survive_deepcopy_and_pickle_bound_to_their_own_modules():
    import copy
    import pickle

    model = build_model("torchvision", {"arch": "mobilenet_v3_small"}, 10, SHAPE).eval()
    x = torch.randn(2, *SHAPE)
    ref = model(x, features=True)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        got = other(x, features=True)
        assert torch.allclose(got.logits, ref.logits, atol=1e-6)
        assert torch.allclose(other.forward_from(3, ref.stages[2]), ref.logits, atol=1e-5)
        with torch.no_grad():
            other.net.classifier[3].weight.zero_()
            other.net.classifier[3].bias.zero_()
        assert torch.equal(other(x, features=True).logits, torch.zeros(2, 10))  # runs on its own modules
        assert torch.allclose(model(x, features=True).logits, ref.logits)


class InplaceTail(nn.Module):
    """Stages that end in batch norm, followed by functional in-place ReLUs (as densenet's and inception's code)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        s = F.relu(self.stem(x), inplace=True)
        h = F.relu(self.body(s), inplace=True)
        return self.fc(h.mean((2, 3)))


def test_fx_stage_outputs_are_not_overwritten_by_later_in_place_ops():
    model = graph_or_hooked(InplaceTail(), SHAPE, 10, None, "inplace")
    assert isinstance(model, GraphModel) and model._stage_names == ["stem", "body"]
    out = model.eval()(torch.randn(2, *SHAPE), features=True)
    assert all((f < 0).any() for f in out.stages)  # the batch norms' outputs, not the ReLUs' applied in place
    check_contract(model)
