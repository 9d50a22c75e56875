"""``data.val_fraction`` is a key of every data set, kept beside its parameters: written into a run's config only
when set (configs without it read and name runs as before), kept by data sweeps, described by ``kdlab list``."""

from kdlab.cli.listing import listing
from kdlab.config import StudyConfig, TeacherRunConfig, load_config
from kdlab.core.registry import DATASETS
from kdlab.study.plan import plan_study
from study_configs import study_cfg


def data_of(**data):
    return load_config(TeacherRunConfig, {"data": {"name": "digits", **data}, "model": "mlp"}).data


def test_val_fraction_is_kept_beside_the_parameters_and_written_only_when_set():
    d = data_of(val_fraction=0.1)
    assert d.val_fraction == 0.1 and "val_fraction" not in d.params  # the data set is built without it
    assert d.model_dump() == {"name": "digits", **DATASETS.get("digits").params().model_dump(), "val_fraction": 0.1}
    assert data_of(val_fraction=0.1).model_dump() == data_of(**d.model_dump()).model_dump()  # it reads back
    assert data_of().model_dump() == data_of(val_fraction=0).model_dump()  # 0 is no split: the configs of old
    assert "val_fraction" not in data_of().model_dump()
    cfg = load_config(TeacherRunConfig, {"data": "digits", "model": "mlp"}, ["data.val_fraction=0.2"])
    assert cfg.data.val_fraction == 0.2


def test_a_data_sweep_keeps_the_validation_split(tmp_path):
    raw = study_cfg(tmp_path / "s")
    raw["data"] = {**raw["data"], "val_fraction": 0.2}
    cfg = load_config(StudyConfig, {**raw, "sweeps": [{"role": "data", "param": "num_train", "values": [96, 192]}]})
    plan = plan_study(cfg)
    assert {r.config["data"]["num_train"] for r in plan} == {96, 192}
    assert all(r.config["data"]["val_fraction"] == 0.2 for r in plan)


def test_kdlab_list_describes_val_fraction_with_each_data_set():
    text = listing("datasets", "digits")
    assert "| val_fraction  | float >= 0, < 1" in text and "| test_fraction" in text  # beside its own parameters
