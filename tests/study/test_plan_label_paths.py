"""A method label becomes a folder name: none may write outside the study's out_dir (or be unusable as a folder)."""

import pytest
import yaml

from conftest import TINY_DATA, TINY_TRAIN
from kdlab.cli.main import main
from kdlab.config import StudyConfig, load_config
from kdlab.core.errors import ConfigError
from kdlab.runs.folder import SUMMARY
from kdlab.study import plan_study


def study(out, teacher_methods=None, student_methods=None):
    return {"name": "paths", "out_dir": str(out), "seeds": [0], "data": dict(TINY_DATA),
            "teacher": {"model": "resnet8", "methods": teacher_methods or {"standard": "standard"},
                        "train": dict(TINY_TRAIN)},
            "student": {"model": "resnet8", "methods": student_methods or {"kd": "kd"}, "train": dict(TINY_TRAIN)}}


@pytest.mark.fast
@pytest.mark.parametrize("label", ["../../../../escaped", "a/b", "..", ".hidden", "", "x\x00y", "c:d", "x" * 101])
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_unsafe_labels_are_refused_before_anything_is_written(tmp_path, label, role):
    methods = {label: "standard" if role == "teacher" else "kd"}
    cfg = study(tmp_path / "s", **({"teacher_methods": methods} if role == "teacher" else {"student_methods": methods}))
    with pytest.raises(ConfigError, match=f"{role}.methods: the label"):
        plan_study(load_config(StudyConfig, cfg))
    assert not (tmp_path / "s").exists() and not (tmp_path / "escaped").exists()


def test_cli_refuses_an_escaping_label_with_exit_2(tmp_path, capsys):
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(study(tmp_path / "s", student_methods={"../../../../escaped": "kd"})))
    assert main(["study", str(cfg)]) == 2
    assert "the label '../../../../escaped' contains '/'" in capsys.readouterr().err
    assert not list(tmp_path.parent.glob("escaped"))


@pytest.mark.fast
def test_sweep_labels_stay_valid(tmp_path):
    cfg = study(tmp_path / "s", student_methods={"kd": "kd"})
    cfg["sweeps"] = [{"role": "student", "method": "kd", "param": "T", "values": [2.0, 4.0]}]
    plan = plan_study(load_config(StudyConfig, cfg))
    assert any(r.method_label == "kd[T=2.0]" for r in plan)


@pytest.mark.parametrize("change, message", [
    ({"pairs": []}, "pairs: the list is empty"),
    ({"teacher": {"model": "resnet8", "methods": {}}}, "teacher.methods: empty, but student method 'kd'"),
    ({"teacher": {"model": "resnet8", "methods": {}}, "student": {"model": "resnet8", "methods": {}}},
     "the study has no runs"),
])
def test_a_study_with_nothing_to_run_is_refused(tmp_path, change, message):
    cfg = study(tmp_path / "s") | change
    with pytest.raises(ConfigError, match=message):
        plan_study(load_config(StudyConfig, cfg))


def test_a_second_different_study_in_one_folder_is_refused(tmp_path):
    from kdlab.analysis.study_command import run_study

    first = study(tmp_path / "s", student_methods={"alone": "none"})
    first["teacher"]["methods"] = {}
    run_study(first, log=lambda s: None)
    before = (tmp_path / "s" / "results.csv").read_text()
    other = dict(first, name="another")
    with pytest.raises(ConfigError, match="holds the study 'paths', this is 'another'"):
        run_study(other, log=lambda s: None)
    assert (tmp_path / "s" / "results.csv").read_text() == before
    run_study(first, log=lambda s: None)  # the same study again continues it
    shared = dict(other, out_dir=str(tmp_path / "t"), runs_dir=str(tmp_path / "s"))
    assert run_study(shared, log=lambda s: None).reused == 1  # another study shares the runs via runs_dir


def test_a_pair_sftn_cannot_serve_is_refused_before_any_run_trains(tmp_path):
    from kdlab.analysis.study_command import run_study

    cfg = study(tmp_path / "s", teacher_methods={"standard": "standard", "sftn": "sftn"},
                student_methods={"kd": "kd"})
    del cfg["teacher"]["model"], cfg["student"]["model"]
    cfg["pairs"] = [{"teacher": "resnet8x4", "student": "resnet8"},
                    {"teacher": "resnet8x4", "student": {"name": "mlp", "hidden": [8]}}]
    with pytest.raises(ConfigError, match="teacher sftn of pair resnet8x4--mlp.*sftn cannot attach student branches"):
        run_study(cfg, log=lambda s: None)
    assert not list(tmp_path.rglob(SUMMARY)) and not list(tmp_path.rglob("last.pt"))
