"""torchvision's released weights by tag (pretrained: IMAGENET1K_V1 / DEFAULT / true / ResNet18_Weights.X), for the
torchvision adapter and imagenet_resnet*: read from torch.hub's cache (laid out by the test in TORCH_HOME),
fetched only when asked and not cached, a new classifier for other class counts; tags checked with the config."""

import re
from pathlib import Path

import pytest
import torch
import torch.hub
from torchvision import models as tvm

from cli_run import run, write
from hub_cache import block_network, distinct_state, release, same, torch_hub_cache
from kdlab.config import load_config
from kdlab.config.schema import TeacherRunConfig
from kdlab.core.errors import CheckpointError, ConfigError
from kdlab.models import build_model
from kdlab.models.native import native_module

SHAPE = (3, 32, 32)


@pytest.fixture
def no_network(monkeypatch):
    return block_network(monkeypatch)


@pytest.fixture
def torch_home(tmp_path, monkeypatch, no_network):
    return torch_hub_cache(tmp_path, monkeypatch)


@pytest.mark.parametrize("tag", ["DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"])
def test_resnet18_takes_the_released_weights_and_a_new_classifier(torch_home, tag, capsys):
    home, fetched = torch_home
    released = release(home, "resnet18")
    model = build_model("torchvision", {"arch": "resnet18", "pretrained": tag}, 10, SHAPE)
    got = native_module(model).state_dict()
    assert same(got, released, skip=("fc.",)) and got["fc.weight"].shape == (10, 512)
    assert not torch.equal(got["fc.weight"], released["fc.weight"][:10])
    assert "ResNet18_Weights.IMAGENET1K_V1 was trained on 1000 classes, the data have 10: the classifier fc is " \
           "new" in capsys.readouterr().err
    assert fetched == []


def test_a_thousand_classes_keep_the_released_classifier_and_the_presets_take_tags_too(torch_home, capsys):
    home, fetched = torch_home
    released = release(home, "resnet18")
    model = build_model("torchvision", {"arch": "resnet18", "pretrained": "DEFAULT"}, 1000, SHAPE)
    assert same(native_module(model).state_dict(), released) and "is new" not in capsys.readouterr().err
    model = build_model("imagenet_resnet18", {"pretrained": "IMAGENET1K_V1"}, 10, SHAPE)
    assert same(native_module(model).state_dict(), released, skip=("fc.",))
    assert fetched == []


def test_a_model_with_another_head_gets_its_own_new_classifier(torch_home, capsys):
    home, fetched = torch_home
    released = release(home, "mobilenet_v3_small")
    model = build_model("torchvision", {"arch": "mobilenet_v3_small", "pretrained": True}, 10, SHAPE)
    got = model.net.state_dict()
    assert same(got, released, skip=("classifier.3.",)) and got["classifier.3.weight"].shape == (10, 1024)
    assert "the classifier classifier.3 is new" in capsys.readouterr().err and fetched == []


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet:FutureWarning")
def test_the_model_is_the_one_torchvision_builds_for_its_weights(torch_home):
    home, fetched = torch_home
    weights = tvm.GoogLeNet_Weights.IMAGENET1K_V1
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the released file holds the auxiliary heads, which torchvision drops after loading
        released = distinct_state(tvm.googlenet(weights=None, aux_logits=True, init_weights=False))
    path = home / "hub" / "checkpoints" / Path(weights.url).name
    path.parent.mkdir(parents=True)
    torch.save(released, path)
    net = build_model("torchvision", {"arch": "googlenet", "pretrained": True}, 10, SHAPE).net
    assert net.transform_input and net.aux1 is None and net.aux2 is None
    got = net.state_dict()
    assert same(got, {k: v for k, v in released.items() if k in got}, skip=("fc.",)) and fetched == []
    assert got["fc.weight"].shape == (10, 1024) and not any(k.startswith("aux") for k in got)


def test_weights_not_in_the_cache_are_fetched_only_when_asked_and_a_failure_is_one_line(torch_home, capsys):
    home, fetched = torch_home
    build_model("torchvision", {"arch": "resnet18"}, 10, SHAPE)
    build_model("imagenet_resnet18", {}, 10, SHAPE)
    assert fetched == []
    url = tvm.ResNet18_Weights.IMAGENET1K_V1.url
    with pytest.raises(CheckpointError) as e:
        build_model("torchvision", {"arch": "resnet18", "pretrained": "DEFAULT"}, 10, SHAPE)
    msg = str(e.value)
    assert fetched == [url] and "\n" not in msg
    assert msg.startswith(f"torchvision resnet18: cannot load torchvision's ResNet18_Weights.IMAGENET1K_V1 ({url}): "
                          "URLError: <urlopen error [Errno -3] Temporary failure in name resolution>")
    assert f"put the file in {home / 'hub' / 'checkpoints'}" in msg
    assert f"torchvision resnet18: fetching ResNet18_Weights.IMAGENET1K_V1 from {url}" in capsys.readouterr().err


def test_the_resolved_config_names_the_weights_a_tag_stands_for():
    for given, resolved in [("DEFAULT", "IMAGENET1K_V2"), (True, "IMAGENET1K_V2"), ("IMAGENET1K_V1", "IMAGENET1K_V1"),
                            ("ResNet50_Weights.DEFAULT", "IMAGENET1K_V2"), (False, None), (None, None)]:
        for model in ({"name": "torchvision", "arch": "resnet50"}, {"name": "imagenet_resnet50"}):
            cfg = load_config(TeacherRunConfig, {"data": "digits", "model": {**model, "pretrained": given}})
            assert cfg.model.params["pretrained"] == resolved  # resnet50's DEFAULT is its second release


@pytest.mark.parametrize("model, key, fragment", [
    ({"name": "torchvision", "arch": "resnet18", "pretrained": "IMAGENET1K_V2"}, "model.pretrained",
     "not a weights tag of torchvision's resnet18 (valid: IMAGENET1K_V1, DEFAULT); did you mean 'IMAGENET1K_V1'?"),
    ({"name": "torchvision", "arch": "resnet18", "pretrained": "ResNet50_Weights.IMAGENET1K_V2"}, "model.pretrained",
     "'ResNet50_Weights.IMAGENET1K_V2' names weights of another model: resnet18's are ResNet18_Weights"),
    ({"name": "torchvision", "arch": "resnet18", "pretrained": "DEFAULT", "weights": "w.pth"}, "model.pretrained",
     "give weights (a file) or pretrained (the library's weights), not both"),
    ({"name": "torchvision", "arch": "resnt18", "pretrained": "DEFAULT"}, "model.arch",
     "arch 'resnt18' is not a torchvision classification model; did you mean 'resnet18'"),
    ({"name": "imagenet_resnet18", "pretrained": "IMAGENET1K_V9"}, "model.pretrained",
     "not a weights tag of torchvision's resnet18 (valid: IMAGENET1K_V1, DEFAULT)"),
    ({"name": "imagenet_resnet18", "pretrained": "DEFAULT", "small_input": True}, "model.pretrained",
     "torchvision's weights are for the ImageNet stem: set small_input: false"),
])
def test_bad_tags_are_one_line_config_errors_naming_the_key(model, key, fragment, capsys, no_network):
    cfg = {"data": "digits", "model": model}
    with pytest.raises(ConfigError, match=re.escape(f"{key}: {fragment}")):
        load_config(TeacherRunConfig, cfg)
    code, _, err = run(capsys, "train-teacher", write(Path("c.yaml"), cfg))
    assert code == 2 and f"{key}: {fragment}" in err and err.count("\n") == 1 and "Traceback" not in err
    assert no_network == []


def test_building_without_the_config_checks_gives_the_same_one_line_errors(no_network):
    for name, params, shape, fragment in [
            ("torchvision", {"arch": "resnet18", "pretrained": "V9"}, SHAPE, "pretrained: not a weights tag"),
            ("torchvision", {"arch": "resnet18", "pretrained": True, "weights": "w.pth"}, SHAPE, "not both"),
            ("torchvision", {"arch": "resnet18", "pretrained": True}, (1, 32, 32),
             "pretrained: torchvision's weights take 3-channel images; the data have 1 channels"),
            ("imagenet_resnet18", {"pretrained": True}, (1, 32, 32), "the data have 1 channels"),
            ("imagenet_resnet18", {"pretrained": True, "small_input": True}, SHAPE, "(small_input: false)")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            build_model(name, params, 10, shape)
    assert no_network == []
