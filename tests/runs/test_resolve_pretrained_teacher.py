"""Distilling from a pretrained teacher kdlab did not train: teacher: {model: <spec>, weights: <state dict file>}."""

import pytest
import torch
import torch.nn as nn
from torchvision.models import resnet18

from conftest import TINY_DATA, TINY_TRAIN, student_cfg
from kdlab.cli.main import main
from kdlab.config import DistillRunConfig, load_config
from kdlab.core.errors import CheckpointError, ConfigError
from kdlab.core.metrics import classification_metrics
from kdlab.data import load_dataset
from kdlab.engine.predict import predict
from kdlab.models import build_model
from kdlab.models.native import load_pretrained
from kdlab.runs.evaluate import evaluate
from kdlab.runs.export import load_model
from kdlab.runs.resolve import group_key, load_teacher
from kdlab.runs.student import distill
from user_nets import UserNet

RGB_DATA = {**TINY_DATA, "channels": 3}
ONE_EPOCH = {**TINY_TRAIN, "epochs": 1}


USER_MODEL = {"name": "module", "target": "user_nets:UserNet"}


def _test_top1(net: nn.Module, data_spec: dict) -> float:
    """The test top-1 of ``net`` computed here, without kdlab's teacher loading."""
    data = load_dataset(load_config(DistillRunConfig, {"data": data_spec, "student": "resnet8"}).data)
    with torch.no_grad():
        logits = predict(net, data.eval_loader("test", 256))
    return classification_metrics(logits, data.test.y)["top1"]


def _busy_net(net: nn.Module, seed: int) -> nn.Module:
    """``net`` with random batch-norm statistics too, so that a load that missed any tensor would show."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
    return net.eval()


def test_a_state_dict_of_a_kdlab_model_teaches_as_its_run_does(trained_teacher, tmp_path):
    weights = tmp_path / "resnet8.pth"
    torch.save(load_model(trained_teacher.run_dir).state_dict(), weights)  # plain torch.save, no kdlab format
    cfg = student_cfg(tmp_path / "from-weights", train=ONE_EPOCH)
    s = distill({**cfg, "teacher": {"model": "resnet8", "weights": str(weights)}})
    assert s.summary["teacher_top1"] == trained_teacher.summary["top1"]
    assert s.summary["teacher_path"] == str(weights)
    run = distill(student_cfg(tmp_path / "from-run", trained_teacher.run_dir, train=ONE_EPOCH))
    for key in ("top1", "nll", "teacher_top1", "teacher_nll", "agreement"):  # the same teacher, the same student
        assert s.summary[key] == run.summary[key]
    # kdlab eval takes a pretrained teacher too
    out = evaluate({"path": str(s.run_dir), "teacher": {"model": "resnet8", "weights": str(weights)}})
    assert out["teacher_top1"] == trained_teacher.summary["top1"] and out["agreement"] == s.summary["agreement"]


def test_a_users_module_saved_by_dataparallel_is_a_teacher(tmp_path):
    net = _busy_net(UserNet(), seed=3)
    # a training script's checkpoint of a DataParallel model: nested under 'state_dict', keys prefixed 'module.'
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "user-s0.pth")
    teacher = {"model": USER_MODEL, "weights": str(tmp_path / "user-s{seed}.pth")}
    s = distill({**student_cfg(tmp_path / "s", train=ONE_EPOCH), "teacher": teacher, "protocol": "soteacher"})
    assert s.summary["teacher_top1"] == _test_top1(net, TINY_DATA)
    assert s.summary["teacher_path"] == str(tmp_path / "user-s0.pth")


def test_a_torchvision_resnet18_pth_is_a_teacher(tmp_path):
    net = _busy_net(resnet18(num_classes=10), seed=4)
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    teacher = {"model": {"name": "torchvision", "arch": "resnet18"}, "weights": str(tmp_path / "resnet18.pth")}
    s = distill({**student_cfg(tmp_path / "s", train=ONE_EPOCH), "data": RGB_DATA, "teacher": teacher})
    assert s.summary["teacher_top1"] == _test_top1(net, RGB_DATA)


def test_safetensors_and_kdlab_key_names_load_too(tmp_path):
    from safetensors.torch import save_file

    net = _busy_net(resnet18(num_classes=10), seed=5)
    save_file(net.state_dict(), tmp_path / "r.safetensors")
    ref = load_config(DistillRunConfig, {"data": RGB_DATA, "student": "resnet8", "teacher": {
        "model": {"name": "imagenet_resnet18"}, "weights": str(tmp_path / "r.safetensors")}}).teacher
    data = load_dataset(load_config(DistillRunConfig, {"data": RGB_DATA, "student": "resnet8"}).data)
    teacher, path = load_teacher(ref, data, torch.device("cpu"))
    x = data.test.x[:8]
    with torch.no_grad():
        assert torch.allclose(teacher(x), net(x), atol=1e-5) and path == tmp_path / "r.safetensors"
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    # a kdlab model's own state dict (the module adapter's 'net.' keys) fits as well
    source = build_model("module", {"target": USER_MODEL["target"]}, 10, (1, 8, 8))
    torch.save(source.state_dict(), tmp_path / "kdlab-keys.pt")
    target = build_model("module", {"target": USER_MODEL["target"]}, 10, (1, 8, 8))
    load_pretrained(target, tmp_path / "kdlab-keys.pt", "teacher")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_pretrained_teachers_of_one_group_share_a_key_by_file_and_model(tmp_path):
    def key(weights, model="resnet8"):
        cfg = {**student_cfg(tmp_path / "s"), "teacher": {"model": model, "weights": str(weights)}}
        return group_key(load_config(DistillRunConfig, cfg).model_dump(mode="json"))

    assert key(tmp_path / "a.pth") == key(tmp_path / "a.pth")
    assert key(tmp_path / "a.pth") != key(tmp_path / "b.pth")
    assert key(tmp_path / "a.pth") != key(tmp_path / "a.pth", "resnet20")


def test_a_run_teachers_saved_config_keeps_its_keys(trained_teacher, tmp_path):
    plain = load_config(DistillRunConfig, student_cfg(tmp_path / "s", trained_teacher.run_dir)).model_dump()
    assert plain["teacher"] == {"path": str(trained_teacher.run_dir), "checkpoint": "last"}


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    # the error is one line (an info line of the torchvision adapter about the model it built may precede it)
    err = "".join(ln + "\n" for ln in err.splitlines() if not ln.startswith("torchvision "))
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return code, err


def test_bad_pretrained_teachers_are_one_line_errors(trained_teacher, tmp_path, capsys):
    r18 = tmp_path / "resnet18.pth"
    torch.save(resnet18(num_classes=10).state_dict(), r18)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")
    tv = "teacher.model={name: torchvision, arch: resnet18}"
    base = ["distill", "data=digits", "student=resnet8", "train.epochs=1", "train.progress=off"]
    cases = [  # (arguments, exit code, message)
        ([tv, f"teacher.weights={r18}"], 1, "conv1.weight has shape (64, 3, 7, 7) in the file, (64, 1, 7, 7)"),
        (["teacher.model=resnet8", f"teacher.weights={r18}"], 1, "missing keys (first: stages.0"),
        (["teacher.model=resnet8", f"teacher.weights={tmp_path / 'list.pth'}"], 1, "is not a state dict"),
        (["teacher.model=resnet8", f"teacher.weights={tmp_path / 'none.pth'}"], 1, "not found"),
        (["teacher.model=resnet8", f"teacher.weights={tmp_path / 'module.pth'}"], 1, "save model.state_dict()"),
        (["teacher.model=resnet8", f"teacher.weights={trained_teacher.run_dir / 'checkpoints' / 'last.pt'}"], 1,
         "is a kdlab checkpoint, not a weights file: give it as teacher.path"),
        ([f"teacher.weights={r18}"], 2, "teacher.model: required with weights"),
        ([f"teacher.path={trained_teacher.run_dir}", f"teacher.weights={r18}"], 2, "give path or weights"),
        ([f"teacher.path={trained_teacher.run_dir}", "teacher.model=resnet8"], 2, "teacher.model: goes with weights"),
        (["teacher.model=resnet8", f"teacher.weights={r18}", "teacher.checkpoint=best"], 2, "teacher.checkpoint"),
        (["teacher.model=resnet9", f"teacher.weights={r18}"], 2, "teacher.model.name: unknown model 'resnet9'"),
    ]
    for i, (args, code, match) in enumerate(cases):
        out = tmp_path / f"s{i}"
        got, err = _cli(capsys, *base, *args, f"out_dir={out}")
        assert got == code and match in err, (args, err)
        assert not out.exists()  # nothing was started


def test_rco_needs_a_teacher_run_not_a_weights_file(tmp_path):
    weights = tmp_path / "w.pth"
    torch.save(build_model("resnet8", {}, 10, (1, 8, 8)).state_dict(), weights)
    cfg = {**student_cfg(tmp_path / "s", method="rco", train=ONE_EPOCH),
           "teacher": {"model": "resnet8", "weights": str(weights)}}
    with pytest.raises(ConfigError, match="rco: needs the teacher's checkpoint"):
        distill(cfg)


def test_a_teacher_run_of_zero_epochs_points_to_pretrained_teachers(tmp_path, capsys):
    code, err = _cli(capsys, "train-teacher", "data=digits", "model=resnet8", "train.epochs=0",
                     f"out_dir={tmp_path / 't'}")
    assert code == 2 and "train.epochs: must be at least 1" in err and "weights: FILE" in err
    assert not (tmp_path / "t").exists()


def test_weights_files_that_fit_nothing_name_the_first_bad_key(tmp_path):
    model = build_model("resnet8", {}, 10, (1, 8, 8))
    state = model.state_dict()
    state["classifier.weight"] = torch.zeros(5, state["classifier.weight"].shape[1])
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"classifier.weight has shape \(5, \d+\) in the file"):
        load_pretrained(build_model("resnet8", {}, 10, (1, 8, 8)), tmp_path / "w.pth", "teacher resnet8")
