"""The timm adapter's pretrained: true: timm's released weights of the arch's tag through the Hugging Face cache
(laid out by the test, offline, no network), adapted by timm (new classifier, other input channels), fetched only
when asked; bad tags and conflicts are one-line config errors; a checkpoint is rebuilt without fetching."""

import re
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch

from cli_run import run, write
from conftest import TINY_TRAIN, teacher_cfg
from hub_cache import block_network, distinct_state, hub_snapshot, offline_hub_cache
from kdlab.config import load_config
from kdlab.config.schema import TeacherRunConfig
from kdlab.core.errors import CheckpointError, ConfigError
from kdlab.models import build_model
from kdlab.runs.folder import RunFolder
from kdlab.runs.resolve import checkpoint_model
from kdlab.runs.teacher import train_teacher

TAG = "resnet10t.c3_in1k"  # timm's smallest ResNet with released weights
SHAPE = (3, 32, 32)


@pytest.fixture
def no_network(monkeypatch):
    return block_network(monkeypatch)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, no_network):
    return offline_hub_cache(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def released():
    """A stand-in for timm's released resnet10t.c3_in1k: its 1000-class state dict, moved off any initialisation."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return distinct_state(timm.create_model("resnet10t", num_classes=1000))


def same(a: dict, b: dict, skip: tuple[str, ...] = ()) -> bool:
    keys = [k for k in b if not k.startswith(skip)]
    return bool(keys) and all(torch.equal(a[k], b[k]) for k in keys)


def test_the_tags_weights_load_from_the_cache_with_a_new_head_for_other_class_counts(hub_cache, no_network,
                                                                                     released, capsys):
    hub_snapshot(hub_cache, f"timm/{TAG}", {"model.safetensors": released})
    model = build_model("timm", {"arch": TAG, "pretrained": True}, 10, SHAPE)
    got = model.net.state_dict()
    assert same(got, released, skip=("fc.",)) and got["fc.weight"].shape == (10, 512)
    assert not torch.equal(got["fc.weight"], released["fc.weight"][:10])
    err = capsys.readouterr().err
    assert f"timm {TAG}: pretrained weights {TAG} from hf-hub:timm/{TAG}/model.safetensors" in err
    assert f"{TAG} was trained on 1000 classes, the data have 10: the classifier fc is new" in err
    # ImageNet's class count keeps the released head; no tag: timm's default one, named in the log
    model = build_model("timm", {"arch": "resnet10t", "pretrained": True}, 1000, SHAPE)
    assert same(model.net.state_dict(), released)
    err = capsys.readouterr().err
    assert f"pretrained weights {TAG} from" in err and "is new" not in err
    # one input channel: timm sums the first convolution's weights over the released three
    model = build_model("timm", {"arch": TAG, "pretrained": True}, 10, (1, 32, 32))
    got = model.net.state_dict()
    assert torch.allclose(got["conv1.0.weight"], released["conv1.0.weight"].sum(1, keepdim=True))
    assert same(got, released, skip=("fc.", "conv1.0."))
    assert f"{TAG} takes 3-channel inputs, the data have 1: timm adapted its first convolution" in \
        capsys.readouterr().err
    assert no_network == []


def test_a_cached_pytorch_model_bin_serves_where_no_safetensors_file_is(hub_cache, released):
    hub_snapshot(hub_cache, f"timm/{TAG}", {"pytorch_model.bin": released})
    assert same(build_model("timm", {"arch": TAG, "pretrained": True}, 10, SHAPE).net.state_dict(), released,
                skip=("fc.",))


def test_offline_and_not_cached_is_one_line(hub_cache, no_network):
    with pytest.raises(CheckpointError) as e:
        build_model("timm", {"arch": TAG, "pretrained": True}, 10, SHAPE)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"timm {TAG}: hf-hub:timm/{TAG}/model.safetensors is not in the "
                                              f"Hugging Face cache {hub_cache} and HF_HUB_OFFLINE is set")
    assert f"hf download timm/{TAG} model.safetensors" in msg and no_network == []


def test_weights_are_fetched_only_when_asked(tmp_path, monkeypatch, no_network, released):
    calls = []

    def fetch(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("local_files_only")))
        path = tmp_path / "fetched" / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        save_file(released, str(path))
        return str(path)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fetch)
    build_model("timm", {"arch": TAG}, 10, SHAPE)
    build_model("timm", {"arch": TAG, "pretrained": False}, 10, SHAPE)
    assert calls == []
    model = build_model("timm", {"arch": TAG, "pretrained": True}, 10, SHAPE)
    assert calls == [(f"timm/{TAG}", "model.safetensors", False)]
    assert same(model.net.state_dict(), released, skip=("fc.",)) and no_network == []


@pytest.mark.parametrize("model, key, fragment", [
    ({"arch": "resnet10t.bogus", "pretrained": True}, "model.arch",
     f"timm has no pretrained weights for 'resnet10t.bogus'; tags with weights: {TAG}"),
    ({"arch": "resnt10t", "pretrained": True}, "model.arch", "arch 'resnt10t' is not a timm model; did you mean"),
    ({"arch": TAG, "pretrained": True, "weights": "w.pth"}, "model.pretrained",
     "give weights (a file) or pretrained (the library's weights), not both"),
    ({"arch": TAG, "kwargs": {"pretrained": True}}, None, "kwargs: 'pretrained' is not accepted"),
])
def test_bad_tags_and_conflicts_are_one_line_errors_naming_the_key(model, key, fragment, capsys, no_network):
    cfg = {"data": "mixed-feature", "model": {"name": "timm", **model}}
    if key is not None:  # checked with the config, before any data are made
        with pytest.raises(ConfigError, match=re.escape(f"{key}: ") + ".*" + re.escape(fragment)):
            load_config(TeacherRunConfig, cfg)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        build_model("timm", model, 10, SHAPE)
    code, _, err = run(capsys, "train-teacher", write(Path("c.yaml"), cfg))
    assert code == 2 and fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert no_network == []


def test_a_pretrained_run_trains_and_its_checkpoint_is_rebuilt_without_fetching(tmp_path, monkeypatch, released):
    cache = offline_hub_cache(tmp_path, monkeypatch)
    tried = block_network(monkeypatch)
    hub_snapshot(cache, f"timm/{TAG}", {"model.safetensors": released})
    data = {"name": "mixed-feature", "channels": 3, "patch_size": 8, "num_train": 64, "num_test": 32}
    result = train_teacher(teacher_cfg(tmp_path / "run", data=data, train={**TINY_TRAIN, "epochs": 1},
                                       model={"name": "timm", "arch": TAG, "pretrained": True}))
    shutil.rmtree(cache)  # rebuilding the checkpoint must not need the weights again
    cache.mkdir()
    model, ck = checkpoint_model(RunFolder(result.run_dir).checkpoint("last"), None, torch.device("cpu"))
    assert ck["model"]["params"]["pretrained"] is True
    assert same(model.state_dict(), ck["model_state"]) and tried == []
