"""Published teachers in a study (teacher.published): the label's teachers are not trained, every seed's students
(and TAKD assistants) distil from the weights file, and misuse is a config error naming the key."""

import pytest
import torch

from kdlab.config import StudyConfig, load_config
from kdlab.core.errors import ConfigError
from kdlab.models import build_model
from kdlab.study import plan_study
from study_configs import study_cfg

pytestmark = pytest.mark.fast  # planning only


@pytest.fixture
def weights(tmp_path):
    file = tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    file.parent.mkdir()
    torch.save({"model": build_model("resnet8", {}, 4, (3, 8, 8)).state_dict()}, file)
    return file


def published(tmp_path, weights, **pub):
    cfg = study_cfg(tmp_path / "study")
    cfg["teacher"]["published"] = {"weights": {"resnet8": str(weights)}, **pub}
    return load_config(StudyConfig, cfg)


def test_the_published_label_trains_no_teacher_and_its_students_read_the_file(tmp_path, weights):
    plan = plan_study(published(tmp_path, weights))
    teachers = {(r.teacher_label, r.seed) for r in plan if r.kind == "teacher"}
    assert teachers == {("wd0", 0), ("wd0", 1)}  # the other label is still trained
    students = [r for r in plan if r.kind == "student" and r.teacher_label == "standard"]
    assert {r.seed for r in students} == {0, 1} and len(students) == 4  # kd, kdT2 x 2 seeds
    for r in students:
        assert r.needs == []
        assert r.config["teacher"] == {"model": {"name": "resnet8"}, "weights": str(weights.resolve()),
                                       "weights_format": "auto"}
    others = [r for r in plan if r.kind == "student" and r.teacher_label == "wd0"]
    assert others and all(r.config["teacher"]["path"].endswith(f"wd0/seed{r.seed}") for r in others)


def test_without_published_teachers_the_plan_is_unchanged(tmp_path, weights):
    cfg = study_cfg(tmp_path / "study")
    plain = plan_study(load_config(StudyConfig, cfg))
    assert {r.teacher_label for r in plain if r.kind == "teacher"} == {"standard", "wd0"}
    assert all("path" in r.config["teacher"] for r in plain if r.kind == "student" and r.teacher_label)


def test_takd_assistants_distil_from_the_published_file(tmp_path, weights):
    cfg = study_cfg(tmp_path / "study")
    cfg["pairs"] = [{"teacher": "resnet8", "student": {"name": "mlp", "hidden": [16]},
                     "assistant": {"name": "mlp", "hidden": [32]}}]
    del cfg["teacher"]["model"], cfg["student"]["model"]
    cfg["teacher"]["published"] = {"weights": {"resnet8": str(weights)}}
    plan = plan_study(load_config(StudyConfig, cfg))
    assistants = [r for r in plan if r.kind == "assistant" and r.teacher_label == "standard"]
    assert assistants and all(r.config["teacher"]["weights"] == str(weights.resolve()) for r in assistants)


@pytest.mark.parametrize("pub, key", [
    ({"label": "nope"}, "teacher.published.label"),
    ({"weights": {"resnet20": "x.pth"}}, "teacher.published.weights.resnet20"),
    ({"weights": {"resnet8": "missing.pth"}}, "teacher.published.weights.resnet8"),
])
def test_a_wrong_published_teacher_is_an_error_naming_the_key(tmp_path, weights, pub, key):
    cfg = study_cfg(tmp_path / "study")
    cfg["teacher"]["published"] = {"weights": {"resnet8": str(weights)}, **pub}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan_study(load_config(StudyConfig, cfg))


def test_a_trajectory_over_a_published_teacher_is_refused(tmp_path, weights):
    cfg = study_cfg(tmp_path / "study")
    cfg["teacher"]["published"] = {"weights": {"resnet8": str(weights)}}
    cfg["trajectory"] = {"every": 1, "teachers": ["standard"]}
    with pytest.raises(ConfigError, match="trajectory"):
        plan_study(load_config(StudyConfig, cfg))
