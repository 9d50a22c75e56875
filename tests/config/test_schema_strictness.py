"""Input that used to be accepted silently: booleans as numbers, duplicate YAML keys, absurd nesting, devices."""

import pytest

from kdlab.cli.main import main
from kdlab.config import DistillRunConfig, TeacherRunConfig, load_config
from kdlab.core.errors import ConfigError

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

BASE = {"data": "digits", "model": "resnet8"}


@pytest.mark.parametrize("override, key", [("optim.lr=true", "optim.lr"), ("seed=false", "seed"),
                                           ("train.batch_size=true", "train.batch_size")])
def test_a_boolean_is_not_a_number(override, key):
    with pytest.raises(ConfigError, match=f"{key}: expected a number, not a boolean"):
        load_config(TeacherRunConfig, BASE, [override])


def test_a_method_parameter_refuses_a_boolean_too():
    with pytest.raises(ConfigError, match="method.T: expected a number, not a boolean"):
        load_config(DistillRunConfig, {"data": "digits", "student": "resnet8", "teacher": {"path": "t"}},
                    ["method.T=true"])


def test_booleans_stay_booleans_and_numbers_numbers():
    cfg = load_config(TeacherRunConfig, BASE, ["train.deterministic=true", "optim.lr=1"])
    assert cfg.train.deterministic is True and cfg.optim.lr == 1.0


def test_duplicate_yaml_keys_are_an_error(tmp_path, capsys):
    f = tmp_path / "t.yaml"
    f.write_text("data: digits\nmodel: resnet8\noptim: {lr: 0.1}\noptim: {lr: 0.2}\n")
    assert main(["train-teacher", str(f)]) == 2
    err = capsys.readouterr().err
    assert "the key 'optim' appears twice" in err and "line 4" in err and err.count("\n") == 1


def test_duplicate_keys_in_an_override_are_an_error():
    with pytest.raises(ConfigError, match="'lr' appears twice"):
        load_config(TeacherRunConfig, BASE, ["optim={lr: 0.1, lr: 0.2}"])


def test_deep_nesting_is_a_config_error(tmp_path, capsys):
    f = tmp_path / "deep.yaml"
    f.write_text("data: " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["train-teacher", str(f)]) == 2
    assert "nested too deeply" in capsys.readouterr().err


def test_a_config_path_that_is_not_a_file(capsys):
    assert main(["train-teacher", "/dev/null"]) == 2
    assert "is not a regular file" in capsys.readouterr().err


def test_many_errors_are_counted_once():
    with pytest.raises(ConfigError) as e:
        load_config(DistillRunConfig, {"data": "digits", "student": "resnet8", "teacher": {"path": "t"},
                                       "method": {"name": "kd", "T": "x", "alpha": "y", "gamma": "z"}},
                    ["seed=q", "optim.lr=w"])
    assert str(e.value).count("more error") == 1, e.value
