import pytest

from kdlab.config import DistillRunConfig, StudyConfig, TeacherRunConfig, apply_overrides, load_config
from kdlab.core.errors import ConfigError

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


def base():
    return {"data": "digits", "model": "resnet8"}


def test_defaults_and_components():
    cfg = load_config(TeacherRunConfig, base())
    assert cfg.model.name == "resnet8" and cfg.method.name == "standard"
    assert cfg.optim.lr == 0.05 and cfg.schedule.milestones == [150, 180, 210] and cfg.train.epochs == 240
    d = load_config(DistillRunConfig, {"data": "digits", "student": "resnet8"})
    assert d.method.name == "kd" and d.method["T"] == 4.0 and d.method["alpha"] == 0.9 and d.method["gamma"] == 0.1


def test_overrides_typed_and_nested():
    cfg = load_config(DistillRunConfig, {"data": "digits", "student": "resnet8"},
                      ["optim.lr=0.01", "seed=3", "method.T=2", "schedule.milestones=[5, 8]", "train.device=cpu"])
    assert cfg.optim.lr == 0.01 and cfg.seed == 3 and cfg.method["T"] == 2.0
    assert cfg.schedule.milestones == [5, 8] and cfg.train.device == "cpu"


def test_yaml_scientific_notation_and_off(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: digits\nmodel: resnet8\noptim: {weight_decay: 5e-4}\ntrain: {progress: off}\n")
    cfg = load_config(TeacherRunConfig, p)
    assert cfg.optim.weight_decay == 5e-4 and cfg.train.progress == "off"


@pytest.mark.parametrize("overrides, expected", [
    (["optim.lrr=0.1"], "optim.lrr: unknown key; did you mean 'lr'"),
    (["optim.lr=abc"], "optim.lr: Input should be a valid number"),
    (["model.name=resnt8"], "model.name: unknown model 'resnt8'; did you mean 'resnet8'"),
    (["method.name=kdd"], "method.name: unknown teacher method 'kdd'"),
    (["data.num_sampels=3"], "data.num_sampels: unknown key"),
    (["train.epochs=-1"], "train.epochs: Input should be greater than 0"),
    (["trian.epochs=3"], "trian: unknown key; did you mean 'train'"),
    (["schedule.milestones=[5,2]"], "milestones must be increasing"),
    (["train.device=gpu"], "device must be auto, cpu"),
    (["schedule.gamma=.inf"], "schedule.gamma: Input should be a finite number"),
    (["method=soteacher", "method.lambda_lr=.nan"], "method.lambda_lr: Input should be a finite number"),
])
def test_errors_name_the_key(overrides, expected):
    with pytest.raises(ConfigError) as e:
        load_config(TeacherRunConfig, base(), overrides)
    msg = str(e.value)
    assert expected in msg, msg
    assert "\n" not in msg


def test_component_params_are_validated_with_nearest_name():
    with pytest.raises(ConfigError, match=r"student.methods.kd.Tmp: unknown key; did you mean .T."):
        load_config(StudyConfig, {"data": "digits", "teacher": {"model": "resnet8"},
                                  "student": {"model": "resnet8", "methods": {"kd": {"name": "kd", "Tmp": 3}}}})
    with pytest.raises(ConfigError, match=r"data.num_sampels: unknown key; did you mean 'num_samples'"):
        load_config(TeacherRunConfig, {"data": {"name": "mnist1d", "num_sampels": 10}, "model": "cnn1d"})


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="bad override"):
        load_config(TeacherRunConfig, base(), ["optim.lr"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TeacherRunConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(TeacherRunConfig, bad)


def test_apply_overrides_refines_string_component():
    out = apply_overrides({"method": "kd"}, ["method.T=2"])
    assert out == {"method": {"name": "kd", "T": 2}}


def test_missing_required_key():
    with pytest.raises(ConfigError, match="model: required key is missing"):
        load_config(TeacherRunConfig, {"data": "digits"})


def test_every_shipped_config_parses():
    from pathlib import Path

    import yaml

    from kdlab.api import quickstart_config
    from kdlab.config import schema_for

    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "configs").rglob("*.yaml")) + [Path(quickstart_config())]
    assert len(files) > 1
    for f in files:
        raw = yaml.safe_load(f.read_text())
        load_config(schema_for(raw), f)
