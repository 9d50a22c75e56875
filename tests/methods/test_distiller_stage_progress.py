"""Initialisation stages show progress like the main loop; settings that cannot take effect are warned about."""

import re

import pytest

from conftest import TINY_TRAIN, student_cfg
from kdlab.runs.student import distill

LOG_TRAIN = {**TINY_TRAIN, "epochs": 1, "progress": "log"}


@pytest.mark.parametrize("method", [{"name": "ft", "init_epochs": 2}, {"name": "sskd", "ss_epochs": 2},
                                    {"name": "ab", "init_epochs": 2}])
def test_initialisation_stage_shows_epochs_and_loss(tmp_path, trained_teacher, capsys, method):
    distill(student_cfg(tmp_path / "s", trained_teacher.run_dir, method=method, train=LOG_TRAIN))
    err = capsys.readouterr().err
    stage = re.findall(rf"\[[^\]]*{method['name']} initialisation stage\] epoch (\d)/2 loss [\d.]+ \|.*left", err)
    assert stage == ["1", "2"], err
    # the stage comes before the first epoch of distillation
    assert err.index("initialisation stage] epoch 2/2") < err.index("] epoch 1/1")


def test_silent_stage_with_progress_off(tmp_path, trained_teacher, capsys):
    distill(student_cfg(tmp_path / "s", trained_teacher.run_dir, method={"name": "ft", "init_epochs": 2}))
    assert "initialisation stage" not in capsys.readouterr().err


def test_settings_that_cannot_take_effect_are_warned_about(tmp_path, trained_teacher, capsys):
    distill(student_cfg(tmp_path / "dkd", trained_teacher.run_dir, method={"name": "dkd", "warmup": 20}))
    err = capsys.readouterr().err
    assert "warning: method.warmup 20 > train.epochs 2" in err, err
    distill(student_cfg(tmp_path / "dkd0", trained_teacher.run_dir, method={"name": "dkd", "warmup": 2}))
    assert "warning" not in capsys.readouterr().err
    distill(student_cfg(tmp_path / "late", trained_teacher.run_dir, method={"name": "kd", "switch_epoch": 2}))
    assert "warning: method.switch_epoch 2 >= train.epochs 2: the run never distils" in capsys.readouterr().err
