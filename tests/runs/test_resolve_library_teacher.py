"""A teacher that is a library's released model (``teacher: {model: {name: torchvision, arch: ..., pretrained:
TAG}}``, no file and no run): loaded from torch.hub's cache with exactly the released weights, frozen, and the
config errors of mixing it with a file's or a run's keys."""

import pytest
import torch

from hub_cache import block_network, release, same, torch_hub_cache
from kdlab.config import DistillRunConfig, load_config
from kdlab.core.errors import ConfigError
from kdlab.data.base import DataBundle, Split
from kdlab.models.native import native_module
from kdlab.runs.resolve import load_teacher

pytestmark = pytest.mark.fast


def cfg(**teacher):
    return {"data": {"name": "digits"}, "student": "resnet8", "method": "kd", "teacher": teacher}


def images(classes: int) -> DataBundle:
    x, y = torch.zeros(4, 3, 32, 32), torch.arange(4) % classes
    return DataBundle("images", Split(x, y), Split(x, y), classes, (3, 32, 32))


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    block_network(monkeypatch)
    return torch_hub_cache(tmp_path, monkeypatch)


def test_a_released_torchvision_model_is_a_teacher_with_exactly_its_weights(torch_home):
    home, fetched = torch_home
    state = release(home, "resnet18", "IMAGENET1K_V1")
    ref = load_config(DistillRunConfig, cfg(model={"name": "torchvision", "arch": "resnet18",
                                                   "pretrained": "IMAGENET1K_V1"})).teacher
    assert ref.library() and ref.weights is None
    model, path = load_teacher(ref, images(1000), torch.device("cpu"))
    assert same(native_module(model).state_dict(), state) and not fetched
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert "resnet18" in str(path) and "IMAGENET1K_V1" in str(path)


@pytest.mark.parametrize("extra, key", [({"weights_format": "plain"}, "teacher.weights_format"),
                                        ({"checkpoint": "best"}, "teacher.checkpoint")])
def test_a_released_model_with_a_files_or_runs_keys_is_an_error_naming_the_key(extra, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DistillRunConfig, cfg(model={"name": "torchvision", "arch": "resnet18",
                                                 "pretrained": "DEFAULT"}, **extra))


def test_a_model_without_weights_or_pretrained_is_still_refused():
    with pytest.raises(ConfigError, match="model.pretrained"):
        load_config(DistillRunConfig, cfg(model={"name": "torchvision", "arch": "resnet18"}))
