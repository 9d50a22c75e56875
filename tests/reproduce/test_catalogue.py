"""The catalogue and the study features it needs: every published table has an experiment, the CLI lists and
plans them, the GPU estimate's FLOP counts are right, and studies can share run folders, give one method its
own schedule, and start a teacher from another teacher of the study."""

import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kdlab.config import StudyConfig, TeacherRunConfig, load_config
from kdlab.core.errors import ConfigError
from kdlab.models import build_model
from kdlab.reproduce.catalogue import EXPERIMENTS
from kdlab.reproduce.command import estimate, list_experiments
from kdlab.reproduce.estimate import FORWARD_GFLOPS, seconds_per_flop
from kdlab.reproduce.published import load_published
from kdlab.study import plan_study


@pytest.mark.fast
def test_every_published_table_and_figure_has_an_experiment():
    for paper in ("soteacher", "sftn"):
        ids = {f"{paper}/{t}" for t in load_published(paper).table_ids}
        missing = ids - set(EXPERIMENTS) - {"soteacher/table5"}  # Table 5 lists the betas: the protocol's data
        assert not missing


def test_list_prints_every_experiment_with_runs_and_gpu_time():
    text = list_experiments()
    for exp_id in EXPERIMENTS:
        assert f"| {exp_id} " in text
    n, hours = estimate(EXPERIMENTS["soteacher/table1"])
    assert n == 60  # 4 teacher methods x 2 teacher architectures x 3 seeds + 4 x 3 pairs x 3 KD students
    assert 10 < hours < 1000
    assert text.splitlines()[0].rstrip().endswith("| est. GPU time | grouped |")
    _, grouped = estimate(EXPERIMENTS["sftn/table1"], grouped=True)
    assert grouped < estimate(EXPERIMENTS["sftn/table1"])[1]


def test_cli_lists_and_plans_without_training(tmp_path):
    out = subprocess.run([sys.executable, "-m", "kdlab", "reproduce", "--list"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0 and "sftn/table7" in out.stdout
    out = subprocess.run([sys.executable, "-m", "kdlab", "reproduce", "soteacher/table6", "--dry-run", "seeds=[0]"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "82 runs" in out.stdout  # 2 x 2 teachers + 13 methods x 2 teachers x 3 pairs
    assert "beta: 50.0" in out.stdout and "beta: 100.0" in out.stdout  # FitNets' weight per teacher kind
    assert not (tmp_path / "runs").exists()
    bad = subprocess.run([sys.executable, "-m", "kdlab", "reproduce", "sftn/tabel1"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "did you mean 'sftn/table1'" in bad.stderr


@pytest.mark.parametrize("key", [("resnet8x4", False), ("wrn_16_2", False), ("ShuffleV2", False),
                                 ("MobileNetV2", False)])
@pytest.mark.fast
def test_forward_flops_of_the_estimate_are_counted(key):
    name, small = key
    m = build_model(name, {"small_input": True} if small else {}, 100, (3, 32, 32)).eval()
    with FlopCounterMode(display=False) as fc:
        m(torch.zeros(1, 3, 32, 32))
    assert fc.get_total_flops() / 1e9 == pytest.approx(FORWARD_GFLOPS[key], rel=1e-3)


@pytest.mark.fast
def test_seconds_per_flop_come_from_sftn_table8():
    s = seconds_per_flop()
    assert 5e-14 < s < 5e-13  # an effective 2-20 TFLOP/s GPU


def _study(tmp_path, **kw):
    cfg = {"name": "s", "out_dir": str(tmp_path / "study"), "seeds": [0], "data": {"name": "digits"},
           "teacher": {"model": "mlp", "methods": {"standard": "standard",
                                                   "ft": {"name": "sftn", "student": {"name": "mlp"},
                                                          "pretrained": "standard", "branch_only_epochs": 1}},
                       "overrides": {"ft": {"train": {"epochs": 3}, "optim": {"lr": 0.01}}}},
           "student": {"model": "mlp", "methods": {"kd": "kd"}}}
    cfg.update(kw)
    return cfg


def test_a_method_takes_its_own_settings_and_starts_from_another_teacher(tmp_path):
    plan = plan_study(load_config(StudyConfig, _study(tmp_path, runs_dir=str(tmp_path / "shared"))))
    ft = next(r for r in plan if r.teacher_label == "ft" and r.kind == "teacher")
    std = next(r for r in plan if r.teacher_label == "standard" and r.kind == "teacher")
    assert ft.config["train"]["epochs"] == 3 and ft.config["optim"]["lr"] == 0.01
    assert std.config["train"]["epochs"] != 3 and std.config["optim"]["lr"] == 0.05
    assert ft.config["method"]["pretrained"] == str(std.run_dir) and ft.needs == [std.run_dir]
    assert str(std.run_dir).startswith(str(tmp_path / "shared"))  # run folders in runs_dir, not in out_dir
    load_config(TeacherRunConfig, ft.config)


def test_method_settings_are_validated(tmp_path):
    cfg = _study(tmp_path)
    cfg["teacher"]["overrides"] = {"ft": {"train": {"epochs": 0}}}
    with pytest.raises(ConfigError, match="teacher.overrides.ft.epochs"):
        load_config(StudyConfig, cfg)
    cfg["teacher"]["overrides"] = {"fine": {"train": {"epochs": 2}}}
    with pytest.raises(ConfigError, match="'fine' is not a teacher method label"):
        load_config(StudyConfig, cfg)


def test_l2_with_its_weight_decay_off_is_allowed_per_method(tmp_path):
    cfg = _study(tmp_path)
    cfg["teacher"]["methods"] = {"standard": "standard", "l2": {"name": "l2", "weight": 5e-4}}
    cfg["teacher"]["overrides"] = {}
    with pytest.raises(ConfigError, match="weight decay"):
        load_config(StudyConfig, cfg)
    cfg["teacher"]["overrides"] = {"l2": {"optim": {"weight_decay": 0.0}}}
    plan = plan_study(load_config(StudyConfig, cfg))
    assert next(r for r in plan if r.teacher_label == "l2").config["optim"]["weight_decay"] == 0.0


@pytest.mark.fast
def test_grouped_estimate_counts_the_teacher_pass_once_per_group(tmp_path):
    from kdlab.reproduce.estimate import TRAIN_IMAGES, gpu_hours

    cfg = load_config(StudyConfig, {
        "out_dir": str(tmp_path), "seeds": [0], "holdout": 0.1, "data": {"name": "cifar100"},
        "teacher": {"model": "wrn_40_2", "methods": {"standard": "standard"}},
        "student": {"model": "wrn_16_2", "methods": {"none": "none", "kd": "kd", "at": "at", "sskd": "sskd",
                                                      "crd": "crd"}, "train": {"epochs": 10}}})
    plan = plan_study(cfg)
    teachers = {str(r.run_dir): r.config["model"] for r in plan if r.kind == "teacher"}
    alone, grouped, pairs = (gpu_hours(plan, teachers, g) for g in (1, 8, 2))
    # one group of kd, at, sskd, crd (none has no teacher): kd, at and crd share one pass, sskd makes its own
    per_pass = FORWARD_GFLOPS[("wrn_40_2", False)] * 1e9 * TRAIN_IMAGES["cifar100"] * 0.9 * 10
    assert alone - grouped == pytest.approx(2 * per_pass * seconds_per_flop() / 3600, rel=1e-9)
    # groups of two: (kd, at) share, (sskd, crd) do not
    assert alone - pairs == pytest.approx(per_pass * seconds_per_flop() / 3600, rel=1e-9)
