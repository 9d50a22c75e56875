import pytest
import torch

from kdlab.core.registry import MODELS
from kdlab.models import build_model, count_parameters
from kdlab.models.contract import Features

SHAPES = {"image": (3, 32, 32), "sequence": (1, 40), "any": (3, 8, 8)}


def sample(name: str) -> tuple[tuple[int, ...], dict]:
    """A small input shape for the model (ImageNet-style models declare a 64x64 ``sample_shape``) and the example
    parameters of entries that need some (the adapters)."""
    meta = MODELS.get(name).meta
    return meta.get("sample_shape", SHAPES[meta.get("input", "any")]), dict(meta.get("example", {}))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_honours_the_feature_contract(name):
    shape, params = sample(name)
    torch.manual_seed(0)
    model = build_model(name, params, 7, shape)
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
    # vgg8 by hand: 3x3 convs with bias + BN (2 per channel), then a 512 -> 100 linear layer:
    # block0 3*64*9+64+128 = 1,920; block1 64*128*9+128+256 = 74,112; block2 128*256*9+256+512 = 295,680;
    # block3 256*512*9+512+1,024 = 1,181,184; block4 512*512*9+512+1,024 = 2,360,832; classifier 51,300
    ("vgg8", 3_965_028), ("vgg11", 9_277_284), ("vgg13", 9_462_180), ("vgg16", 14_774_436),
    ("vgg19", 20_086_692),
    ("MobileNetV2", 812_836), ("ShuffleV1", 949_258), ("ShuffleV2", 1_355_528), ("ResNet50", 23_705_252),
    # resnet8x2 by hand: stem 3*16*9+32 = 464; stage1 (16 -> 32, projection shortcut) 16*32*9+32*32*9+16*32
    # + 3 BN * 64 = 14,528; stage2 (32 -> 64) 18,432+36,864+2,048+384 = 57,728; stage3 (64 -> 128)
    # 73,728+147,456+8,192+768 = 230,144; classifier 128*100+100 = 12,900
    ("resnet8x2", 315_764),
])
def test_parameter_counts_match_reference_architectures(name, count):
    with torch.device("meta"):  # counting needs no memory nor initialisation
        assert count_parameters(build_model(name, {}, 100, (3, 32, 32))) == count


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet152"])
def test_imagenet_resnets_have_torchvisions_parameter_counts(arch):
    from torchvision.models import get_model

    with torch.device("meta"):
        ours = count_parameters(build_model(f"imagenet_{arch}", {}, 1000, (3, 224, 224)))
        assert ours == count_parameters(get_model(arch, num_classes=1000))
        # the CIFAR-style stem swaps the 7x7 conv for a 3x3 one (3*64*49 -> 3*64*9 weights)
        small = count_parameters(build_model(f"imagenet_{arch}", {"small_input": True}, 1000, (3, 224, 224)))
        assert small == ours - 3 * 64 * 40


def test_imagenet_mobilenetv1_parameter_count():
    with torch.device("meta"):
        assert count_parameters(build_model("imagenet_mobilenetv1", {}, 1000, (3, 224, 224))) == 4_231_976


@pytest.mark.parametrize("name, params, shape, sides", [
    ("imagenet_resnet18", {}, (3, 64, 64), [32, 16, 8, 4, 2]),
    # SoTeacher's Tiny-ImageNet ResNets keep the full 64x64 resolution in the stem
    ("imagenet_resnet18", {"small_input": True}, (3, 64, 64), [64, 64, 32, 16, 8]),
    ("imagenet_mobilenetv1", {}, (3, 64, 64), [32, 16, 8, 4, 2]),
    ("vgg8", {}, (3, 32, 32), [32, 16, 8, 4, 4]),
    # on 64x64 inputs the reference VGG pools once more before its last block, keeping it at 4x4
    ("vgg8", {}, (3, 64, 64), [64, 32, 16, 8, 4]),
    ("MobileNetV2", {}, (3, 32, 32), [16, 16, 8, 4, 2]),
    ("ShuffleV2", {}, (3, 32, 32), [32, 16, 8, 4]),
])
def test_stage_resolutions_follow_the_reference_code(name, params, shape, sides):
    model = build_model(name, params, 10, shape).eval()
    out = model(torch.randn(1, *shape), features=True)
    assert [f.shape[-1] for f in out.stages] == sides


@pytest.mark.parametrize("name", ["vgg8", "ShuffleV1", "ShuffleV2", "ResNet50", "imagenet_mobilenetv1",
                                  "resnet8x2"])
def test_stage_outputs_are_relu_of_their_preactivations(name):
    model = build_model(name, {}, 10, (3, 32, 32))
    out = model(torch.randn(2, 3, 32, 32), features=True)
    assert all(torch.equal(f, p.relu()) for f, p in zip(out.stages, out.preact))
    assert all((p < 0).any() for p in out.preact)


def test_relu_features_are_post_activation_for_resnets():
    model = build_model("resnet8", {}, 10, (3, 32, 32))
    out = model(torch.randn(2, 3, 32, 32), features=True)
    assert all((f >= 0).all() for f in out.stages)
    assert any((p < 0).any() for p in out.preact)
    assert [f.shape[-1] for f in out.stages] == [32, 32, 16, 8]


def test_input_kind_mismatch_is_a_config_error():
    from kdlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="takes image inputs"):
        build_model("resnet8", {}, 10, (1, 40))
    with pytest.raises(ConfigError, match="cannot build"):
        build_model("wrn", {"depth": 15}, 10, (3, 8, 8))
