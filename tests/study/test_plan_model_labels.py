"""Models in a study have short labels: in tables and folder names, the full spec stays in each run's config."""

import re

import pytest
import yaml

from conftest import TINY_DATA, TINY_TRAIN
from kdlab.analysis.study_command import run_study
from kdlab.config import StudyConfig, load_config
from kdlab.core.errors import ConfigError
from kdlab.study import plan_study
from kdlab.study.plan import MAX_LABEL, arch_label, slug

_NET = """
import torch.nn as nn

class SmallCNN(nn.Module):
    def __init__(self, num_classes, in_channels, width=8, depth=1, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))
"""

LONG = {"name": "module", "target": "mynets_labels:SmallCNN", "kwargs": {"width": 12, "depth": 1, "dropout": 0.0},
        "stages": ["body.1"]}


def study(out, teacher, student="resnet8", **kw):
    return {"name": "labels", "out_dir": str(out), "seeds": [0], "data": dict(TINY_DATA),
            "pairs": [{"teacher": teacher, "student": student}],
            "teacher": {"methods": {"standard": "standard"}, "train": {**TINY_TRAIN, "epochs": 1}},
            "student": {"methods": {"kd": "kd"}, "train": {**TINY_TRAIN, "epochs": 1}}, **kw}


@pytest.fixture
def mynets(tmp_path, monkeypatch):
    (tmp_path / "mynets_labels.py").write_text(_NET)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_long_spec_gets_a_short_derived_label_and_a_safe_folder(tmp_path, mynets):
    cfg = load_config(StudyConfig, study(tmp_path / "s", LONG))
    label = arch_label(cfg.pair_list()[0].teacher)
    assert label.startswith("SmallCNN-") and len(label) <= MAX_LABEL
    res = run_study(cfg, log=lambda s: None)
    for d in (tmp_path / "s").rglob("*"):
        rel = d.relative_to(tmp_path / "s")
        assert all(len(part) <= 2 * MAX_LABEL + 2 and re.fullmatch(r"[A-Za-z0-9._=+-]+", part)
                   for part in rel.parts), rel
    assert f"Teacher {label}" in res.table or f"| {label}" in res.table, res.table
    assert "target=" not in res.table and "kwargs" not in res.table
    (run,) = (tmp_path / "s" / "teachers").rglob("config.yaml")
    assert yaml.safe_load(run.read_text())["model"]["kwargs"] == LONG["kwargs"]  # the full spec is kept


def test_user_label_names_the_model_and_changing_it_keeps_nothing_else(tmp_path, mynets):
    cfg = load_config(StudyConfig, study(tmp_path / "s", {**LONG, "label": "cnn-w12"}))
    plan = plan_study(cfg)
    teacher = next(r for r in plan if r.kind == "teacher")
    assert teacher.run_dir.parts[-3] == "cnn-w12" and "label" not in teacher.config["model"]
    assert any(r.pair == "cnn-w12--resnet8" for r in plan)
    with pytest.raises(ConfigError, match="label"):
        load_config(StudyConfig, study(tmp_path / "x", {**LONG, "label": ""}))


def test_one_label_for_two_models_is_refused(tmp_path, mynets):
    cfg = study(tmp_path / "s", {"name": "resnet8", "label": "net"}, student={"name": "resnet20", "label": "net"})
    with pytest.raises(ConfigError, match="label 'net' names two different models"):
        plan_study(load_config(StudyConfig, cfg))


def test_slug_is_safe():
    assert slug("resnet_cifar(depth=8, filters=[32, 32])") == "resnet_cifar-depth=8-filters=32-32"
    assert slug("module(target=a.b:C, kwargs={'w': 3})") == "module-target=a.b-C-kwargs=w-3"
    assert slug("../../x") == "x"


def test_pair_label_names_the_pair(tmp_path):
    cfg = study(tmp_path / "s", "resnet8x4")
    cfg["pairs"][0]["label"] = "wide to thin"
    plan = plan_study(load_config(StudyConfig, cfg))
    assert {r.pair for r in plan if r.kind == "student"} == {"wide-to-thin"}
