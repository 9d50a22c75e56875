"""kdlab tune's settings: distributions, the command line's --search form, and every search key and value checked
against the run config's schema before anything trains (an error names the key)."""

import pytest

from kdlab.config import DistillRunConfig, TeacherRunConfig
from kdlab.config.tune import (
    base_mapping,
    check_search,
    default_direction,
    load_tune_config,
    parse_search,
    run_schema,
)
from kdlab.core.errors import ConfigError

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

TEACHER = {"data": "digits", "model": {"name": "mlp", "hidden": [32]}}
STUDENT = {"data": "digits", "student": "mlp", "method": "kd", "teacher": {"path": "runs/t"}}


def checked(search, base=TEACHER, **kw):
    cfg = load_tune_config({"base": base, "search": search, **kw})
    raw = base_mapping(cfg)
    schema = run_schema(cfg, raw)
    check_search(cfg, raw, schema)
    return cfg, schema


def test_a_valid_search_and_its_kind_detected():
    cfg, schema = checked({"optim.lr": {"float": [0.01, 0.2], "log": True}, "train.epochs": {"int": [2, 5]},
                           "model.hidden": {"choice": [[16], [32, 32]]}})
    assert schema is TeacherRunConfig
    assert cfg.search["optim.lr"].model_dump() == {"float": [0.01, 0.2], "log": True}
    assert cfg.search["model.hidden"].model_dump() == {"choice": [[16], [32, 32]]}
    _, schema = checked({"method.T": {"float": [1, 8]}, "method.alpha": {"float": [0, 1]}}, base=STUDENT)
    assert schema is DistillRunConfig


@pytest.mark.parametrize("search, base, expected", [
    ({"optim.lrr": {"float": [0.01, 0.2]}}, TEACHER,
     "search.optim.lrr: optim.lrr is not a key of a teacher config; did you mean 'lr'"),
    ({"method.T": {"float": [1, 8]}}, TEACHER, "search.method.T: method.T is not a key of a teacher config"),
    ({"method.TT": {"float": [1, 8]}}, STUDENT, "search.method.TT: method.TT is not a key of a distill config"),
    ({"optim.lr": {"float": [0, 0.2]}}, TEACHER, "search.optim.lr: the value 0.0 is refused (optim.lr: Input "
     "should be greater than 0"),
    ({"train.epochs": {"float": [1, 5]}}, TEACHER, "search.train.epochs: the value 2.49"),  # inside the range
    ({"optim.name": {"choice": ["sgd", "rmsprop"]}}, TEACHER, "search.optim.name: the value 'rmsprop' is refused"),
    ({"method.T": {"float": [-1, 4]}}, STUDENT, "search.method.T: the value -1.0 is refused"),
])
def test_a_key_or_value_the_schema_refuses_is_named(search, base, expected):
    with pytest.raises(ConfigError) as e:
        checked(search, base=base)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


@pytest.mark.parametrize("dist, expected", [
    ({"float": [0.2, 0.1]}, "search.optim.lr: float: low must be below high"),
    ({"float": [0, 0.1], "log": True}, "search.optim.lr: float: log needs low > 0"),
    ({"flot": [0.1, 0.2]}, "search.optim.lr: give one of float: [low, high], int: [low, high] or choice"),
    ({"float": [0.1, 0.2], "choice": [1, 2]}, "(not float and choice)"),
    ({"float": 0.1}, "search.optim.lr: float: expected [low, high], got 0.1"),
    ({"float": [0.1, 0.2], "lgo": True}, "search.optim.lr.lgo: unknown key"),
    ({"int": [1, 2.5]}, "search.optim.lr: int: low, high and step must be whole numbers"),
    ({"choice": [0.1]}, "search.optim.lr: choice: give at least two values"),
    ({"choice": [0.1, 0.1]}, "search.optim.lr: choice: the values repeat"),
    ({"float": [True, 2]}, "search.optim.lr.low: expected a number, not a boolean"),
])
def test_a_bad_distribution_is_named(dist, expected):
    with pytest.raises(ConfigError, match="^tune config: ") as e:
        checked({"optim.lr": dist})
    assert expected in str(e.value)


def test_the_search_cannot_set_the_run_folder_and_needs_a_key():
    with pytest.raises(ConfigError, match="search.out_dir: set by the search itself"):
        checked({"out_dir": {"choice": ["a", "b"]}})
    with pytest.raises(ConfigError, match="search: give at least one key"):
        checked({})


def test_a_study_config_is_not_a_base():
    with pytest.raises(ConfigError, match="base: a study config cannot be tuned"):
        checked({"optim.lr": {"float": [0.1, 0.2]}}, base={"seeds": [0], "data": "digits"})


def test_base_file_and_its_overrides(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("data: digits\nmodel: mlp\ntrain: {epochs: 3}\n")
    cfg = load_tune_config({"base": str(path), "overrides": ["train.epochs=7", "data.val_fraction=0.1"],
                            "search": {"optim.lr": {"float": [0.01, 0.1]}}})
    raw = base_mapping(cfg)
    assert raw["train"]["epochs"] == 7 and raw["data"] == {"name": "digits", "val_fraction": 0.1}
    with pytest.raises(ConfigError, match=r"t.yaml: train.epochs: must be at least 1"):
        bad = cfg.model_copy(update={"overrides": ["train.epochs=0"]})
        check_search(bad, base_mapping(bad), run_schema(bad, base_mapping(bad)))


@pytest.mark.parametrize("text, key, dist", [
    ("method.T=float:1:8", "method.T", {"float": [1, 8]}),
    ("optim.lr=float:0.01:0.2:log", "optim.lr", {"float": [0.01, 0.2], "log": True}),
    ("train.epochs=int:2:9", "train.epochs", {"int": [2, 9]}),
    ("method.name=choice:kd,dkd", "method.name", {"choice": ["kd", "dkd"]}),
    ("train.batch_size=choice:32, 64", "train.batch_size", {"choice": [32, 64]}),
])
def test_the_command_line_search_form(text, key, dist):
    assert parse_search(text) == (key, dist)
    assert load_tune_config({"base": TEACHER, "search": {key: dist}}).search[key].model_dump() == dist


@pytest.mark.parametrize("text, expected", [
    ("optim.lr", "--search 'optim.lr': expected KEY=float:LOW:HIGH"),
    ("optim.lr=float:1", "--search optim.lr: expected float:LOW:HIGH or float:LOW:HIGH:log"),
    ("optim.lr=float:1:2:lg", "--search optim.lr: expected float:LOW:HIGH or float:LOW:HIGH:log"),
    ("optim.lr=gauss:1:2", "--search optim.lr: unknown distribution 'gauss'"),
])
def test_a_bad_command_line_search_is_named(text, expected):
    with pytest.raises(ConfigError) as e:
        parse_search(text)
    assert str(e.value).startswith(expected)


def test_direction_follows_the_metric_unless_given():
    assert [default_direction(m) for m in ("val_top1", "val_nll", "loss", "ece", "agreement")] == \
        ["maximize", "minimize", "minimize", "minimize", "maximize"]
    cfg = load_tune_config({"base": TEACHER, "search": {"optim.lr": {"float": [0.1, 0.2]}}, "metric": "val_nll",
                            "direction": "maximize"})
    assert cfg.resolved_direction() == "maximize"
