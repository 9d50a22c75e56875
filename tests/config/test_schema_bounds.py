"""A number outside the range its meaning allows is a one-line config error naming its dotted key, for the run
configs' own keys and for the components' parameters alike (the study's sweeps included)."""

from __future__ import annotations

import pytest

from kdlab.config import DistillRunConfig, StudyConfig, TeacherRunConfig, load_config
from kdlab.core.errors import ConfigError

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

TEACHER = {"data": "digits", "model": "mlp"}
STUDENT = {"data": "digits", "student": "mlp", "teacher": {"path": "t"}}


@pytest.mark.parametrize("overrides, message", [
    (["data.test_fraction=1e9"], "data.test_fraction: Input should be less than 1"),
    (["data.test_fraction=0"], "data.test_fraction: Input should be greater than 0 (got 0)"),
    (["data.split_seed=-1"], "data.split_seed: Input should be greater than or equal to 0 (got -1)"),
    (["data=mixed-feature", "data.feature_purity=1.5"], "data.feature_purity: Input should be less than or equal "
                                                        "to 1 (got 1.5)"),
    (["data=mixed-feature", "data.num_train=0"], "data.num_train: Input should be greater than 0 (got 0)"),
    (["data=mnist1d", "data.train_split=1"], "data.train_split: Input should be less than 1 (got 1)"),
    (["model=wrn", "model.dropout=1"], "model.dropout: Input should be less than 1 (got 1)"),
    (["model=wrn", "model.depth=4"], "model.depth: Input should be greater than or equal to 10 (got 4)"),
    (["model.hidden=[16, 0]"], "model.hidden.1: Input should be greater than 0 (got 0)"),
    (["optim.momentum=1"], "optim.momentum: Input should be less than 1 (got 1)"),
    (["holdout=1"], "holdout: Input should be less than 1 (got 1)"),
])
def test_an_out_of_range_number_names_its_key_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(TeacherRunConfig, TEACHER, overrides)
    assert str(e.value).startswith("config: " + message) and "\n" not in str(e.value), str(e.value)


def test_a_method_parameter_out_of_range_names_its_key():
    with pytest.raises(ConfigError, match=r"^config: method.ss_milestones.0: Input should be greater than or "
                                          r"equal to 0 \(got -5\)$"):
        load_config(DistillRunConfig, STUDENT, ["method=sskd", "method.ss_milestones=[-5]"])


def test_a_swept_value_out_of_range_is_refused_before_the_study_runs():
    study = {"data": "digits", "seeds": [0], "teacher": {"model": "mlp"}, "student": {"model": "mlp"},
             "sweeps": [{"role": "data", "param": "test_fraction", "values": [0.2, 2]}]}
    with pytest.raises(ConfigError, match=r"sweeps\[0\] \(data.test_fraction=2\): Input should be less than 1"):
        load_config(StudyConfig, study)


def test_any_integer_is_a_run_seed():
    assert load_config(TeacherRunConfig, TEACHER, ["seed=-3"]).seed == -3
    assert load_config(TeacherRunConfig, TEACHER, ["seed=100000000000000000000"]).seed == 10 ** 20
