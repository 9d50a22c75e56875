"""Checkpoints of RepDistiller (the CRD benchmark), mdistiller and torchdistill load into kdlab's models exactly.

The fixture (foreign_fixtures/cifar_zoo.json, provenance inside) holds the reference codes' state-dict keys and
shapes of every architecture, and the logits their models compute with the weights of :func:`fill`; the weights
themselves are remade here, so the fixture stays small.
"""

import argparse
import json
import math
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_DATA, student_cfg
from kdlab.cli.main import main
from kdlab.config import DistillRunConfig, load_config
from kdlab.core.errors import CheckpointError, ConfigError
from kdlab.data import load_dataset
from kdlab.models import build_model
from kdlab.models.foreign import FOREIGN_FORMATS, WEIGHTS_FORMATS, convert, key_map
from kdlab.models.native import load_pretrained
from kdlab.runs.resolve import load_init, load_teacher, resolve_student_run

FIXTURE = Path(__file__).parent / "foreign_fixtures" / "cifar_zoo.json"
NUM_CLASSES = 100
CIFAR_DATA = {"name": "mixed-feature", "num_train": 8, "num_test": 8, "num_classes": NUM_CLASSES,
              "num_features": NUM_CLASSES, "channels": 3, "grid": 8, "patch_size": 4}  # 3x32x32 inputs


def fill(keys: list[tuple[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Deterministic weights for a state dict of these (key, shape) pairs: each tensor from a generator seeded by
    its position, scaled by 1/sqrt(fan-in); batch-norm statistics random too (variances positive), so that a
    tensor loaded into the wrong place changes the logits.  The fixture's reference logits were computed with
    these weights in the reference codes' models."""
    out = {}
    for i, (key, shape) in enumerate(keys):
        g = torch.Generator().manual_seed(i)
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            t = torch.tensor(i, dtype=torch.long)
        elif key.endswith("running_var"):
            t = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean") or len(shape) == 1 and not key.endswith("weight"):
            t = 0.1 * torch.randn(shape, generator=g)  # means and biases
        elif len(shape) == 1:
            t = 1 + 0.1 * torch.randn(shape, generator=g)  # batch-norm scales
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        out[key] = t
    return out


def sample_input() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _fixture() -> dict:
    return json.loads(FIXTURE.read_text())


FIX = _fixture()
CASES = [(fmt, arch) for fmt in FIX["keys"] for arch in FIX["keys"][fmt]]
LOGIT_CASES = [(fmt, arch) for fmt in FIX["logits"] for arch in FIX["logits"][fmt]]


def _keys(fmt: str, arch: str) -> list[tuple[str, list[int]]]:
    keys = FIX["keys"][fmt][arch]
    if isinstance(keys, str):  # the same list as that format's (mdistiller's models are RepDistiller's code)
        keys = FIX["keys"][keys][arch]
    return [(k, shape) for k, shape in keys]


def _kdlab_name(arch: str) -> tuple[str, dict]:
    return tuple(FIX["kdlab_models"].get(arch, [arch, {}]))


def _kdlab(arch: str) -> torch.nn.Module:
    name, params = _kdlab_name(arch)
    return build_model(name, params, NUM_CLASSES, (3, 32, 32))


def _optimizer_state(state: dict[str, torch.Tensor]) -> dict:
    """An SGD optimizer's state_dict after RepDistiller's / mdistiller's learning-rate decay, whose lr is a
    numpy.float64 (``lr * decay ** np.sum(epoch > np.asarray(milestones))``)."""
    params = [torch.nn.Parameter(v.clone()) for v in state.values() if v.is_floating_point()][:3]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    lr = 0.05 * 0.1 ** np.sum(np.asarray([150, 180, 210]) < 240)  # RepDistiller: epoch > np.asarray(...)
    assert isinstance(lr, np.float64)
    for group in opt.param_groups:
        group["lr"] = lr
    return opt.state_dict()


def write_checkpoint(fmt: str, state: dict[str, torch.Tensor], path: Path) -> Path:
    """``state`` saved the way ``fmt``'s trainer saves a model (its wrapper dict and what it holds beside the
    weights): RepDistiller's ``ckpt_epoch_N.pth`` (numpy.float64 lr in the optimizer state), mdistiller's
    ``latest`` (the DataParallel distiller: ``module.student.`` keys), torchdistill's ``save_ckpt`` (argparse
    ``args``, a MultiStepLR state with its Counter)."""
    if fmt == "repdistiller":
        obj = {"epoch": 240, "model": state, "accuracy": torch.tensor(75.6), "optimizer": _optimizer_state(state)}
    elif fmt == "mdistiller":
        obj = {"epoch": 240, "model": {f"module.student.{k}": v for k, v in state.items()},
               "optimizer": _optimizer_state(state), "best_acc": torch.tensor(75.6)}
    else:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[91, 136], gamma=0.1)
        args = argparse.Namespace(config="configs/sample/cifar10/kd/resnet20_from_resnet56.yaml", device="cuda",
                                  log=None, start_epoch=0, seed=None, test_only=False, world_size=1)
        obj = {"model": state, "optimizer": opt.state_dict(), "best_value": 91.7, "lr_scheduler": sched.state_dict(),
               "args": args}
        assert isinstance(obj["lr_scheduler"]["milestones"], Counter)
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def cifar_data():
    return load_dataset(load_config(DistillRunConfig, {"data": CIFAR_DATA, "student": "resnet8"}).data)


def _teacher(arch: str, weights: Path, data, fmt: str | None = None) -> torch.nn.Module:
    name, params = _kdlab_name(arch)
    ref = {"model": {"name": name, **params}, "weights": str(weights)}
    if fmt is not None:
        ref["weights_format"] = fmt
    cfg = load_config(DistillRunConfig, {"data": CIFAR_DATA, "student": "resnet8", "teacher": ref})
    return load_teacher(cfg.teacher, data, torch.device("cpu"))[0]


# (a) every stored key list of every format maps completely onto the kdlab model of that name, shapes equal


@pytest.mark.parametrize("fmt,arch", CASES, ids=[f"{f}-{a}" for f, a in CASES])
def test_every_reference_key_list_maps_onto_its_kdlab_model(fmt, arch):
    model = _kdlab(arch)
    keys = _keys(fmt, arch)
    state = {k: torch.zeros(shape) for k, shape in keys}
    mapped = key_map(fmt, model, [k for k, _ in keys])
    own = model.state_dict()
    assert all(v in own for v in mapped.values()), [k for k, v in mapped.items() if v not in own][:3]
    assert len(set(mapped.values())) == len(mapped)  # one place each
    assert all(tuple(own[mapped[k]].shape) == tuple(s) for k, s in keys)
    assert set(own) == set(mapped.values())  # every tensor of the model comes from the file
    assert convert(fmt, model, state).keys() == own.keys()


def test_the_fixture_covers_the_crd_zoo_in_each_format():
    crd = {"resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
           "resnet32x4", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13",
           "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2"}
    assert crd <= set(FIX["keys"]["repdistiller"]) and crd <= set(FIX["keys"]["mdistiller"])
    assert {f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)} <= set(FIX["keys"]["torchdistill"])
    families = {"resnet": "resnet8", "wrn": "wrn_16_1", "vgg": "vgg8", "MobileNetV2": "MobileNetV2",
                "ShuffleV1": "ShuffleV1", "ShuffleV2": "ShuffleV2", "ResNet50": "ResNet50"}
    for fmt in ("repdistiller", "mdistiller"):  # reference logits of one model per family
        assert set(families.values()) <= set(FIX["logits"][fmt]), fmt
    assert "resnet8" in FIX["logits"]["torchdistill"]
    assert FIX["provenance"]["repositories"].keys() == set(FOREIGN_FORMATS)


# (b) per family and format: the file as its trainer writes it, loaded as a teacher, computes the reference logits


@pytest.mark.parametrize("fmt,arch", LOGIT_CASES, ids=[f"{f}-{a}" for f, a in LOGIT_CASES])
def test_a_teacher_from_a_reference_checkpoint_computes_the_reference_logits(fmt, arch, cifar_data, tmp_path):
    weights = write_checkpoint(fmt, fill(_keys(fmt, arch)), tmp_path / "ckpt.pth")
    teacher = _teacher(arch, weights, cifar_data, fmt)
    expected = torch.tensor(FIX["logits"][fmt][arch])
    with torch.no_grad():
        got = teacher(sample_input())
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), float((got - expected).abs().max())


@pytest.mark.parametrize("fmt", ["repdistiller", "torchdistill"])
def test_a_student_initialised_from_a_reference_checkpoint_computes_the_reference_logits(fmt, tmp_path):
    """``init: {weights: FILE}``: the run's own model starts from the file (fine-tuning a published teacher, a
    student from a pretrained one), through the same key maps."""
    weights = write_checkpoint(fmt, fill(_keys(fmt, "resnet8")), tmp_path / "ckpt.pth")
    run = resolve_student_run({"data": CIFAR_DATA, "student": "resnet8", "method": "none",
                               "init": {"weights": str(weights)}, "out_dir": str(tmp_path / "s")})
    student = _kdlab("resnet8")
    load_init(student, run.cfg, "student")
    with torch.no_grad():
        got = student.eval()(sample_input())
    expected = torch.tensor(FIX["logits"][fmt]["resnet8"])
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), float((got - expected).abs().max())


# (c) auto detection


@pytest.mark.parametrize("fmt", FOREIGN_FORMATS)
def test_auto_detection_loads_each_format(fmt, tmp_path):
    arch = "resnet8"
    state = fill(_keys(fmt, arch))
    expected = torch.tensor(FIX["logits"][fmt][arch])
    files = [write_checkpoint(fmt, state, tmp_path / "ckpt.pth")]
    if fmt == "mdistiller":  # its student_latest / student_best: the student alone
        torch.save({"model": state}, tmp_path / "student_best")
        files.append(tmp_path / "student_best")
    else:  # saved from a DataParallel model
        files.append(write_checkpoint(fmt, {f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth"))
    for path in files:
        model = _kdlab(arch).eval()
        found = load_pretrained(model, path, "teacher")
        # RepDistiller's, mdistiller's and torchdistill's CIFAR ResNets share their key names (and so their map):
        # torchdistill's own keys beside the model (args, lr_scheduler) and mdistiller's distiller (its student.
        # keys) tell their files apart, an mdistiller file of the student alone is found as RepDistiller's
        assert found == (fmt if path.name == "ckpt.pth" or fmt == "torchdistill" else "repdistiller"), path
        with torch.no_grad():
            assert torch.allclose(model(sample_input()), expected, atol=1e-5, rtol=1e-5)


def test_auto_detection_tells_kdlab_plain_and_reference_key_names_apart(tmp_path):
    source = _kdlab("ResNet50")
    torch.save(source.state_dict(), tmp_path / "kdlab.pth")
    from kdlab.models.native import native_module

    torch.save(native_module(source).state_dict(), tmp_path / "plain.pth")  # torchvision's names
    write_checkpoint("repdistiller", fill(_keys("repdistiller", "ResNet50")), tmp_path / "rd.pth")
    for file, fmt in (("kdlab.pth", "kdlab"), ("plain.pth", "plain"), ("rd.pth", "repdistiller")):
        assert load_pretrained(_kdlab("ResNet50"), tmp_path / file, "teacher") == fmt
    # mdistiller's files of the student alone are RepDistiller's; its distiller's are told by their student. keys
    write_checkpoint("mdistiller", fill(_keys("mdistiller", "vgg8")), tmp_path / "md.pth")
    assert load_pretrained(_kdlab("vgg8"), tmp_path / "md.pth", "teacher") == "mdistiller"
    for fmt in ("kdlab", "plain"):  # a named format is the only one tried
        with pytest.raises(CheckpointError, match="does not fit the model: .*missing keys"):
            load_pretrained(_kdlab("ResNet50"), tmp_path / "rd.pth", "teacher", fmt)


def test_a_crd_teacher_file_of_old_pytorch_and_numpy_loads(tmp_path, cifar_data):
    """The CRD benchmark's files were written by PyTorch < 1.6 (the legacy format) from a GPU (CUDA storages)
    under NumPy 1, whose scalar reconstructor is numpy.core.multiarray.scalar: such a file is made here from a
    legacy-format file by renaming these in its pickle (protocol 2: text GLOBALs, length-prefixed strings)."""
    state = fill(_keys("repdistiller", "resnet8"))
    path = tmp_path / "ckpt_epoch_240.pth"
    obj = {"epoch": 240, "model": state, "accuracy": torch.tensor(75.6), "optimizer": _optimizer_state(state)}
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    renames = [(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"),
               (b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n"),
               (b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")]
    for old, new in renames:
        assert data.count(old) == 1, old  # each written once, then referred to (pickle's memo)
        data = data.replace(old, new)
    path.write_bytes(data)
    # RepDistiller's {model}_last.pth holds the run's options too, an argparse.Namespace
    last = tmp_path / "resnet8_last.pth"
    torch.save({"opt": argparse.Namespace(model="resnet8", lr_decay_epochs=[150, 180, 210]), "model": state,
                "optimizer": _optimizer_state(state)}, last)
    expected = torch.tensor(FIX["logits"]["repdistiller"]["resnet8"])
    for file in (path, last):
        with torch.no_grad():
            assert torch.allclose(_teacher("resnet8", file, cifar_data)(sample_input()), expected, atol=1e-5)


# (d) a file with any other pickled class is refused, as one line


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return code, err


def test_a_file_with_another_pickled_class_is_refused(tmp_path, capsys):
    state = fill(_keys("repdistiller", "resnet8"))
    bad = tmp_path / "bad.pth"
    torch.save({"epoch": 240, "model": state, "accuracy": Fraction(3, 4)}, bad)
    with pytest.raises(CheckpointError, match=r"holds a pickled fractions.Fraction, which kdlab does not unpickle"):
        load_pretrained(_kdlab("resnet8"), bad, "teacher")
    base = ["distill", f"data={json.dumps(CIFAR_DATA)}", "student=resnet8", "train.epochs=1", "train.progress=off"]
    code, err = _cli(capsys, *base, "teacher.model=resnet8", f"teacher.weights={bad}",
                     "teacher.weights_format=repdistiller", f"out_dir={tmp_path / 's'}")
    assert code == 1 and "fractions.Fraction" in err and not (tmp_path / "s").exists()


# (e) a file of another architecture names the first key that does not fit


def test_a_wrong_architecture_names_the_first_key_that_does_not_fit(tmp_path, capsys):
    path = write_checkpoint("repdistiller", fill(_keys("repdistiller", "resnet32x4")), tmp_path / "r32x4.pth")
    with pytest.raises(CheckpointError, match=r"does not fit as a repdistiller checkpoint: layer1\.1\.conv1\.weight "
                                              r"-> stages\.1\.1\.conv1\.weight: the model has no such tensor"):
        load_pretrained(_kdlab("resnet8x4"), path, "teacher", "repdistiller")
    with pytest.raises(CheckpointError, match=r"fits the model in no format .* closest, repdistiller: "
                                              r"layer1\.1\.conv1\.weight"):
        load_pretrained(_kdlab("resnet8x4"), path, "teacher")
    with pytest.raises(CheckpointError, match=r"conv1\.weight -> stages\.0\.conv\.weight has shape \(32, 3, 3, 3\) "
                                              r"in the file, \(16, 3, 3, 3\) in the model"):
        load_pretrained(_kdlab("resnet32"), path, "teacher", "repdistiller")
    with pytest.raises(CheckpointError, match=r"the file has no tensor for stages\.3\.0\.conv1\.weight"):
        trimmed = {k: v for k, v in fill(_keys("repdistiller", "resnet8")).items() if not k.startswith("layer3.")}
        load_pretrained(_kdlab("resnet8"), write_checkpoint("repdistiller", trimmed, tmp_path / "t.pth"), "teacher",
                        "repdistiller")
    with pytest.raises(CheckpointError, match="no torchdistill key map for VGG"):
        load_pretrained(_kdlab("vgg8"), write_checkpoint("repdistiller", fill(_keys("repdistiller", "vgg8")),
                                                         tmp_path / "v.pth"), "teacher", "torchdistill")
    base = ["distill", f"data={json.dumps(CIFAR_DATA)}", "student=resnet8", "train.epochs=1", "train.progress=off"]
    code, err = _cli(capsys, *base, "teacher.model=resnet8x4", f"teacher.weights={path}", f"out_dir={tmp_path / 's'}")
    assert code == 1 and "layer1.1.conv1.weight" in err


def test_torchdistills_wide_resnets_are_refused_with_the_reason(tmp_path):
    """Its WRN's key names map onto kdlab's wrn, but the network differs (the projection shortcut's input)."""
    model = _kdlab("wrn_16_2")
    names = {"stages.0.conv": "conv1", "bn": "bn1", "classifier": "fc"}
    state = {}
    for k, v in model.state_dict().items():
        module, _, leaf = k.rpartition(".")
        if module.startswith("stages.") and module.count(".") >= 2:
            _, stage, rest = module.split(".", 2)
            module = f"layer{stage}.{rest}".replace(".shortcut", ".shortcut.0")
        else:
            module = names[module]
        state[f"{module}.{leaf}"] = v
    path = write_checkpoint("torchdistill", state, tmp_path / "wrn.pth")
    for fmt in ("torchdistill", "auto"):
        with pytest.raises(CheckpointError, match="torchdistill's CIFAR Wide ResNet is not kdlab's wrn"):
            load_pretrained(_kdlab("wrn_16_2"), path, "teacher", fmt)


def test_weights_format_is_validated_and_only_goes_with_weights(tmp_path):
    base = {"data": CIFAR_DATA, "student": "resnet8"}
    with pytest.raises(ConfigError, match="teacher.weights_format"):
        load_config(DistillRunConfig, {**base, "teacher": {"model": "resnet8", "weights": "w.pth",
                                                           "weights_format": "crd"}})
    with pytest.raises(ConfigError, match="teacher.weights_format: goes with weights"):
        load_config(DistillRunConfig, {**base, "teacher": {"path": str(tmp_path), "weights_format": "kdlab"}})
    ref = load_config(DistillRunConfig, {**base, "teacher": {"model": "resnet8", "weights": "w.pth"}})
    assert "weights_format" not in ref.model_dump()["teacher"]  # the default: saved configs keep their keys
    named = load_config(DistillRunConfig, {**base, "teacher": {"model": "resnet8", "weights": "w.pth",
                                                               "weights_format": "mdistiller"}})
    assert named.model_dump()["teacher"]["weights_format"] == "mdistiller"
    # every choice the config offers is one the loader knows (the loader's list is the config's)
    assert set(WEIGHTS_FORMATS) == {"auto", "kdlab", "plain", *FOREIGN_FORMATS}


# the command line: distilling from a CRD-benchmark teacher file


def test_kdlab_distill_from_a_repdistiller_teacher_file_records_its_top1(tmp_path, capsys):
    from kdlab.core.metrics import classification_metrics
    from kdlab.engine.predict import predict

    data_spec = {**TINY_DATA, "channels": 3}
    cfg = load_config(DistillRunConfig, {"data": data_spec, "student": "resnet8"})
    data = load_dataset(cfg.data)
    # the teacher as kdlab's resnet8 with fill's weights given in kdlab's own key order (the same order as
    # RepDistiller's, for its ResNets): its top-1 computed here, without the key map
    own = build_model("resnet8", {}, data.num_classes, data.input_shape)
    own.load_state_dict(fill([(k, list(v.shape)) for k, v in own.state_dict().items()]))
    with torch.no_grad():
        expected = classification_metrics(predict(own.eval(), data.eval_loader("test", 256)), data.test.y)["top1"]
    foreign_keys = [(k, list(v.shape)) for k, v in zip(
        [k for k, _ in _keys("repdistiller", "resnet8")], own.state_dict().values())]
    path = tmp_path / "save" / "models" / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True)
    write_checkpoint("repdistiller", fill(foreign_keys), path)
    config = tmp_path / "cfg.yaml"
    config.write_text(json.dumps(student_cfg(tmp_path / "run", train={"epochs": 1, "batch_size": 32,
                                                                       "progress": "off"}, data=data_spec)))
    code = main(["distill", str(config), "teacher.model=resnet8", f"teacher.weights={path}",
                 "teacher.weights_format=repdistiller"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["teacher_top1"] == expected and summary["teacher_path"] == str(path)
