"""Which settings do not change a result (volatile) and which may differ within a group (group-free) is declared
once, on the config's fields."""

from __future__ import annotations

from kdlab.config.schema import DistillRunConfig, TeacherRunConfig, TrainConfig, flagged_keys
from kdlab.runs.folder import VOLATILE_KEYS, config_differences
from kdlab.runs.resolve import GROUP_FREE_TRAIN_KEYS


def test_the_declared_flags_are_the_settings_that_change_no_result():
    assert {"out_dir", "train.progress", "train.device", "train.trackers", "train.tracker_project",
            "train.mlflow_uri", "train.log_every_step", "train.eval_batch_size"} == VOLATILE_KEYS
    assert flagged_keys(TeacherRunConfig, "volatile") == flagged_keys(DistillRunConfig, "volatile") == VOLATILE_KEYS
    assert set(GROUP_FREE_TRAIN_KEYS) == {"save_every", "progress"}
    assert set(GROUP_FREE_TRAIN_KEYS) == flagged_keys(TrainConfig, "group_free")


def test_a_volatile_setting_is_no_difference_and_another_is():
    old = {"out_dir": "a", "seed": 0, "train": {"progress": "bar", "epochs": 2}}
    assert config_differences(old, {**old, "out_dir": "b", "train": {"progress": "off", "epochs": 2}}) == []
    assert config_differences(old, {**old, "train": {"progress": "bar", "epochs": 3}}) == ["train.epochs: 2 -> 3"]
