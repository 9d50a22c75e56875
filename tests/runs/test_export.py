"""kdlab export and kdlab.runs.export.load_model: a run's model as a file (state dict, safetensors, TorchScript, ONNX)
that loads without kdlab, in the key names of the user's own code."""

import shutil

import pytest
import torch
from torchvision.models import get_model

import kdlab
import kdlab.api
from conftest import TINY_DATA, TINY_TRAIN
from kdlab.cli.main import main
from kdlab.core.checkpoint import load_weights
from kdlab.core.errors import CheckpointError
from kdlab.models import build_model
from kdlab.models.native import native_module
from kdlab.runs.export import ExportError, _write_torchscript, export_model, load_model
from kdlab.runs.resolve import checkpoint_model as load_kdlab_model
from kdlab.runs.teacher import train_teacher
from user_nets import UserNet

SHAPE = (1, 8, 8)  # TINY_DATA's images


class Branchy(UserNet):
    def forward(self, x):  # a branch on the input's values: a trace records one side only
        return super().forward(x) if x.sum() > 0 else -super().forward(x)


USER_MODEL = {"name": "module", "target": "user_nets:UserNet", "kwargs": {"width": 6}}


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    return train_teacher({"seed": 0, "out_dir": str(out), "data": dict(TINY_DATA), "model": USER_MODEL,
                          "optim": {"lr": 0.05}, "train": {**TINY_TRAIN, "epochs": 1}}).run_dir


def _batch(n: int = 5) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(1))


def _kdlab_logits(run_dir, x, checkpoint="last"):
    model, _ = load_kdlab_model(run_dir / "checkpoints" / f"{checkpoint}.pt", None, torch.device("cpu"))
    with torch.no_grad():
        return model(x)


def test_a_kdlab_checkpoint_opens_with_plain_torch_load_but_holds_kdlab_keys(user_run):
    raw = torch.load(user_run / "checkpoints" / "last.pt")  # torch's defaults: weights_only
    assert raw["format"] == "kdlab-checkpoint-2" and "optimizer_state" in raw
    assert all(k.startswith("net.") for k in raw["model_state"])  # why the export exists


def test_exported_state_dict_loads_strictly_into_the_users_class(user_run):
    path = export_model(user_run)
    assert path == user_run / "export" / "last.pt"
    state = torch.load(path)
    assert not any(k.startswith("net.") for k in state)
    net = UserNet(width=6)
    net.load_state_dict(state, strict=True)
    x = _batch()
    with torch.no_grad():
        assert torch.equal(net.eval()(x), _kdlab_logits(user_run, x))


def test_load_model_returns_the_users_module_in_eval_mode(user_run):
    assert kdlab.load_model is load_model and kdlab.api.export_model is export_model
    model = load_model(user_run)
    assert type(model) is UserNet and not model.training
    x = _batch()
    with torch.no_grad():
        assert torch.equal(model(x), _kdlab_logits(user_run, x))
    assert type(load_model(user_run / "checkpoints" / "best.pt")) is UserNet
    with pytest.raises(CheckpointError, match="no checkpoint 'epoch_007'"):
        load_model(user_run, checkpoint="epoch_007")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_gives_the_same_logits_on_any_batch_size(user_run, tmp_path):
    path = export_model(user_run, "torchscript", tmp_path / "m.ts")
    traced = torch.jit.load(path)
    for n in (1, 7):
        x = _batch(n)
        assert torch.allclose(traced(x), _kdlab_logits(user_run, x), atol=1e-6)


def test_safetensors_loads_into_the_users_class(user_run, tmp_path):
    from safetensors.torch import load_file

    net = UserNet(width=6)
    net.load_state_dict(load_file(export_model(user_run, "safetensors", tmp_path / "m.safetensors")), strict=True)
    x = _batch()
    with torch.no_grad():
        assert torch.equal(net.eval()(x), _kdlab_logits(user_run, x))


def test_onnx_model_is_valid_and_gives_the_same_logits(user_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from onnx.reference import ReferenceEvaluator

    path = export_model(user_run, "onnx", tmp_path / "m.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    evaluator = ReferenceEvaluator(proto)
    for n in (3, 6):  # the batch size is dynamic
        x = _batch(n)
        (out,) = evaluator.run(None, {"input": x.numpy()})
        assert torch.allclose(torch.from_numpy(out), _kdlab_logits(user_run, x), atol=1e-5)


def test_builtin_model_exports_its_own_state_dict_from_the_cli(trained_teacher, tmp_path, capsys):
    run = trained_teacher.run_dir  # resnet8, a checkpoint every epoch
    out = tmp_path / "e1.pt"
    assert main(["export", str(run), "checkpoint=epoch_001", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    model = build_model("resnet8", {}, 10, SHAPE).eval()
    model.load_state_dict(torch.load(out), strict=True)
    expected = load_weights(run / "checkpoints" / "epoch_001.pt")["model_state"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    x = _batch()
    with torch.no_grad():
        assert torch.equal(model(x), _kdlab_logits(run, x, "epoch_001"))


def test_torchvision_models_export_in_torchvisions_key_names():
    for name, params in (("torchvision", {"arch": "resnet18"}), ("imagenet_resnet18", {})):
        model = build_model(name, params, 10, (3, 32, 32)).eval()
        native = native_module(model)
        reference = get_model("resnet18", num_classes=10).state_dict()
        assert list(native.state_dict()) == list(reference)
        assert all(native.state_dict()[k].shape == v.shape for k, v in reference.items())
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(native.eval()(x), model(x), atol=1e-6)
    mobile = build_model("torchvision", {"arch": "mobilenet_v3_small"}, 10, (3, 32, 32))
    assert list(native_module(mobile).state_dict()) == list(get_model("mobilenet_v3_small").state_dict())


def test_export_errors_are_one_line(user_run, tmp_path, capsys, monkeypatch):
    cases = [(["export", str(tmp_path / "nothing")], 1, "not found"),
             (["export", str(user_run), "chekpoint=best"], 2, "did you mean 'checkpoint'"),
             (["export", str(user_run), "checkpoint=epoch_009"], 1, "available: best, last"),
             (["export", str(user_run), "--out", str(user_run / "checkpoints" / "last.pt")], 1,
              "is the checkpoint being exported")]
    for argv, code, match in cases:
        assert main(argv) == code
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1 and "Traceback" not in err
    monkeypatch.setattr("kdlab.runs.export._importable", lambda name: name != "onnxscript")
    assert main(["export", str(user_run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "needs the onnxscript package" in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


def test_a_checkpoint_file_outside_a_run_exports_beside_it(user_run, tmp_path):
    ck = tmp_path / "model.pt"
    shutil.copyfile(user_run / "checkpoints" / "last.pt", ck)
    out = export_model(ck)
    assert out == tmp_path / "export" / "model.pt"
    assert ck.read_bytes() == (user_run / "checkpoints" / "last.pt").read_bytes()  # the checkpoint is left as it was


def test_a_trace_that_does_not_reproduce_the_model_is_refused(tmp_path):
    with pytest.raises(ExportError, match="does not reproduce"):
        _write_torchscript(Branchy().eval(), torch.randn(2, *SHAPE), tmp_path / "b.ts")
    assert not (tmp_path / "b.ts").exists()


def test_export_names_the_layers_that_differ_from_the_stock_torchvision_model():
    from kdlab.runs.export import stock_differences

    for name, params in (("torchvision", {"arch": "resnet18"}), ("imagenet_resnet18", {})):
        model = build_model(name, params, 10, (1, 32, 32))
        said = stock_differences(native_module(model), {"name": name, "params": params})
        parts = said.split("; ")
        assert len(parts) == 3, said  # the stem convolution, the head's weight and bias
        assert "conv1.weight [64, 1, 7, 7] (stock [64, 3, 7, 7])" in parts
        assert "fc.weight [10, 512] (stock [1000, 512])" in parts and "fc.bias [10] (stock [1000])" in parts
    stock = build_model("torchvision", {"arch": "resnet18"}, 1000, (3, 32, 32))
    assert stock_differences(native_module(stock), {"name": "torchvision", "params": {"arch": "resnet18"}}) == ""
    assert stock_differences(native_module(build_model("resnet8", {}, 10, (3, 32, 32))), {"name": "resnet8"}) == ""
