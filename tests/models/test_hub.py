"""hf-hub: weights locations: resolved by the real huggingface_hub in a cache the test lays out (offline, no
network), fetched only when a config names one, and every failure one line."""

import types

import huggingface_hub
import huggingface_hub.errors as hub_errors
import pytest
import torch

from hub_cache import block_network, distinct_state, hub_snapshot, offline_hub_cache
from kdlab.core.errors import CheckpointError
from kdlab.models import build_model
from kdlab.models._weights import load_state, read_state_dict
from kdlab.models.hub import HubFile, local_weights, parse_location
from kdlab.models.small import MLP

REPO = "someone/tiny-mlp"


@pytest.fixture
def no_network(monkeypatch):
    return block_network(monkeypatch)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, no_network):
    return offline_hub_cache(tmp_path, monkeypatch)


def mlp_state(seed: int) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return distinct_state(MLP(4, 16, [8]), seed)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize("location, expected", [
    ("hf-hub:org/repo/model.pth", HubFile("org/repo", "model.pth")),
    ("hf-hub:org/repo/sub/dir/model.safetensors", HubFile("org/repo", "sub/dir/model.safetensors")),
    ("hf-hub:org/repo/model.pth@v1.0", HubFile("org/repo", "model.pth", "v1.0")),
    ("hf-hub:org/repo/model.pth@refs/pr/3", HubFile("org/repo", "model.pth", "refs/pr/3")),
    ("hf-hub:org/repo@0a1b2c3/sub/model.pth", HubFile("org/repo", "sub/model.pth", "0a1b2c3")),
])
def test_locations_parse_to_repository_file_and_revision(location, expected):
    assert parse_location(location, "w") == expected
    assert parse_location(str(expected), "w") == expected  # a location prints as one that parses back


@pytest.mark.parametrize("location", ["hf-hub:org/repo", "hf-hub:org", "hf-hub:org/repo/", "hf-hub:/repo/f.pth",
                                      "hf-hub:org/repo/f.pth@", "hf-hub:org/repo@a/f.pth@b"])
def test_malformed_locations_are_one_line_errors(location):
    with pytest.raises(CheckpointError, match="is not a hub location: write hf-hub:ORG/REPO/FILE") as e:
        local_weights(location, "teacher")
    assert one_line(e).startswith("teacher: ")


def test_a_cached_file_resolves_offline_through_huggingface_hub(hub_cache, no_network):
    main = mlp_state(1)
    commit = hub_snapshot(hub_cache, REPO, {"model.safetensors": main, "old/model.pth": mlp_state(2)})
    tagged = mlp_state(3)
    hub_snapshot(hub_cache, REPO, {"model.safetensors": tagged}, ref="v2")
    path = local_weights(f"hf-hub:{REPO}/model.safetensors", "teacher")
    assert path == hub_cache / "models--someone--tiny-mlp" / "snapshots" / commit / "model.safetensors"
    got = read_state_dict(path, "teacher")
    assert got.keys() == main.keys() and all(torch.equal(got[k], main[k]) for k in main)
    old = read_state_dict(local_weights(f"hf-hub:{REPO}/old/model.pth", "teacher"), "teacher")
    assert all(torch.equal(old[k], v) for k, v in mlp_state(2).items())
    for location in (f"hf-hub:{REPO}/model.safetensors@v2", f"hf-hub:{REPO}@v2/model.safetensors"):
        got = read_state_dict(local_weights(location, "teacher"), "teacher")
        assert all(torch.equal(got[k], tagged[k]) for k in tagged)
    by_commit = read_state_dict(local_weights(f"hf-hub:{REPO}/model.safetensors@{commit}", "teacher"), "teacher")
    assert all(torch.equal(by_commit[k], main[k]) for k in main)
    # the file loads into the model it was saved from
    net = MLP(4, 16, [8])
    load_state(net, got, "teacher", "hf-hub")
    assert all(torch.equal(net.state_dict()[k], tagged[k]) for k in tagged)
    assert no_network == []


def test_offline_and_not_cached_is_one_line_saying_how_to_fetch(hub_cache, no_network):
    hub_snapshot(hub_cache, REPO, {"model.safetensors": mlp_state(1)})
    for location, fetch in [(f"hf-hub:{REPO}/other.pth", f"hf download {REPO} other.pth"),
                            ("hf-hub:nobody/nothing/m.pth@v3", "hf download nobody/nothing m.pth --revision v3"),
                            (f"hf-hub:{REPO}/model.safetensors@v9", "--revision v9")]:
        with pytest.raises(CheckpointError) as e:
            local_weights(location, "teacher timm")
        msg = one_line(e)
        assert msg.startswith(f"teacher timm: {location} is not in the Hugging Face cache {hub_cache}")
        assert fetch in msg and "HF_HUB_OFFLINE" in msg
    assert no_network == []


def test_the_offline_variable_is_read_when_the_weights_are_needed(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # as imported without the variable
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        local_weights(f"hf-hub:{REPO}/model.pth", "w")
    assert no_network == []


class FakeHub:
    """huggingface_hub.hf_hub_download replaced: records each call; writes the file or raises ``error``."""

    def __init__(self, tmp_path, error=None):
        self.calls, self.dir, self.error = [], tmp_path / "fetched", error

    def __call__(self, repo_id, filename, **kwargs):
        self.calls.append((repo_id, filename, kwargs.get("revision"), kwargs.get("local_files_only")))
        if self.error is not None:
            raise self.error
        path = self.dir / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(mlp_state(5), path)
        return str(path)


@pytest.fixture
def online(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    fake = FakeHub(tmp_path)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return fake


def test_nothing_is_fetched_unless_a_location_asks(online, tmp_path, capsys):
    local = tmp_path / "w.pth"
    torch.save(mlp_state(1), local)
    assert local_weights(str(local), "w") == local and local_weights("~/x.pth", "w").name == "x.pth"
    build_model("mlp", {"hidden": [8]}, 4, (16,))
    build_model("timm", {"arch": "resnet10t"}, 10, (3, 32, 32))
    build_model("torchvision", {"arch": "mobilenet_v3_small"}, 10, (3, 32, 32))
    assert online.calls == []
    path = local_weights(f"hf-hub:{REPO}/sub/w.pth@v1", "teacher")
    assert online.calls == [(REPO, "sub/w.pth", "v1", False)]
    assert all(torch.equal(read_state_dict(path, "w")[k], v) for k, v in mlp_state(5).items())
    assert f"teacher: fetching hf-hub:{REPO}/sub/w.pth@v1 into the Hugging Face cache" in capsys.readouterr().err
    local_weights(f"hf-hub:{REPO}/sub/w.pth@v1", "teacher")
    assert len(online.calls) == 1  # one look-up per file and process


def _http_error(status: int) -> Exception:
    response = types.SimpleNamespace(headers={}, request=None, status_code=status)
    return hub_errors.HfHubHTTPError(f"{status} Server Error: Internal Server Error for url: "
                                                 "https://huggingface.co/x\nmore detail", response=response)


def _offline_cause() -> Exception:
    err = hub_errors.LocalEntryNotFoundError("An error happened while trying to locate the file on "
                                                         "the Hub and we cannot find the requested files in the "
                                                         "local cache.")
    err.__cause__ = ConnectionError("[Errno 101] Network is unreachable")
    return err


@pytest.mark.parametrize("error, fragment", [
    (_http_error(500), "cannot fetch hf-hub:someone/tiny-mlp/w.pth: HfHubHTTPError: 500 Server Error"),
    (ConnectionError("[Errno 111] Connection refused\nsecond line"),
     "cannot fetch hf-hub:someone/tiny-mlp/w.pth: ConnectionError: [Errno 111] Connection refused; fetch it with "
     "hf download someone/tiny-mlp w.pth"),
    (_offline_cause(), "(not in the Hugging Face cache"),
    (hub_errors.EntryNotFoundError("404"), "repository someone/tiny-mlp has no file 'w.pth'"),
])
def test_network_and_hub_errors_are_one_line(online, error, fragment):
    online.error = error
    with pytest.raises(CheckpointError) as e:
        local_weights(f"hf-hub:{REPO}/w.pth", "teacher")
    msg = one_line(e)
    assert msg.startswith("teacher: ") and fragment in msg
    if isinstance(error, hub_errors.LocalEntryNotFoundError):
        assert "ConnectionError: [Errno 101] Network is unreachable" in msg
