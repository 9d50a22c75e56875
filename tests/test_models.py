import pytest
import torch

from kdlab.models import build_model, count_parameters
from kdlab.models.contract import Features
from kdlab.registry import MODELS

SHAPES = {"image": (3, 32, 32), "sequence": (1, 40), "any": (3, 8, 8)}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_honours_the_feature_contract(name):
    kind = MODELS.get(name).meta.get("input", "any")
    shape = SHAPES[kind]
    torch.manual_seed(0)
    model = build_model(name, {}, 7, shape)
    x = torch.randn(2, *shape)
    out = model(x, features=True)
    assert isinstance(out, Features)
    assert out.logits.shape == (2, 7)
    assert torch.allclose(model(x), out.logits)
    assert len(out.stages) == len(out.preact) == len(model.stage_channels) == len(model.stages)
    for f, p, c in zip(out.stages, out.preact, model.stage_channels):
        assert f.shape[0] == 2 and f.shape[1] == c and p.shape == f.shape
    assert out.embedding.shape == (2, model.embedding_dim)
    # forward_from(i, input of stage i) reproduces the logits
    model.eval()
    ref = model(x, features=True)
    for i in range(1, len(model.stages)):
        assert torch.allclose(model.forward_from(i, ref.stages[i - 1]), ref.logits, atol=1e-5)
    model.train()
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.kdlab_spec["name"] == name


@pytest.mark.parametrize("name, count", [
    # parameter counts of the CRD-benchmark CIFAR architectures at 100 classes (resnet8 checked by hand:
    # stem 464 + stage1 4,672 + stage2 14,528 + stage3 57,728 + classifier 6,500)
    ("resnet8", 83_892), ("resnet20", 278_324), ("resnet56", 861_620), ("resnet110", 1_736_564),
    ("resnet8x4", 1_233_540), ("resnet32x4", 7_433_860),
    ("wrn_16_2", 703_284), ("wrn_40_1", 569_780), ("wrn_40_2", 2_255_156),
])
def test_parameter_counts_match_reference_architectures(name, count):
    assert count_parameters(build_model(name, {}, 100, (3, 32, 32))) == count


def test_relu_features_are_post_activation_for_resnets():
    model = build_model("resnet8", {}, 10, (3, 32, 32))
    out = model(torch.randn(2, 3, 32, 32), features=True)
    assert all((f >= 0).all() for f in out.stages)
    assert any((p < 0).any() for p in out.preact)
    assert [f.shape[-1] for f in out.stages] == [32, 32, 16, 8]


def test_input_kind_mismatch_is_a_config_error():
    from kdlab.errors import ConfigError

    with pytest.raises(ConfigError, match="takes image inputs"):
        build_model("resnet8", {}, 10, (1, 40))
    with pytest.raises(ConfigError, match="cannot build"):
        build_model("wrn", {"depth": 15}, 10, (3, 8, 8))
