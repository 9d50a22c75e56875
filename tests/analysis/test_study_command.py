import csv
import json
import multiprocessing as mp

import pytest

from conftest import TINY_TRAIN
from kdlab.analysis.document import mean_std
from kdlab.analysis.study_command import run_study
from kdlab.config import StudyConfig, load_config
from kdlab.core.errors import ConfigError, StudyFailedError
from kdlab.data.base import ArrayLoader
from kdlab.runs.folder import SUMMARY, RunFolder
from kdlab.study import plan_study
from study_configs import study_cfg


def test_plan_trains_each_teacher_once_and_alone_once_per_seed(tmp_path):
    plan = plan_study(load_config(StudyConfig, study_cfg(tmp_path)))
    kinds = [(p.kind, p.teacher_label, p.method_label, p.seed) for p in plan]
    assert len(kinds) == len(set(kinds)) == 4 + 2 + 8
    assert sum(1 for k in kinds if k[0] == "teacher") == 4
    assert sum(1 for k in kinds if k[2] == "alone") == 2
    kd = next(p for p in plan if p.method_label == "kd" and p.teacher_label == "wd0" and p.seed == 1)
    assert kd.config["teacher"]["path"] == str(tmp_path / "teachers" / "resnet8" / "wd0" / "seed1")
    assert kd.needs == [tmp_path / "teachers" / "resnet8" / "wd0" / "seed1"]
    order = [p.run_dir for p in plan]
    assert all(order.index(d) < order.index(p.run_dir) for p in plan for d in p.needs)


def test_pairs_sweeps_and_trajectory_plan(tmp_path):
    cfg = study_cfg(tmp_path, seeds=[0])
    del cfg["teacher"]["model"], cfg["student"]["model"]
    cfg["pairs"] = [{"teacher": "resnet8x4", "student": "resnet8"},
                    {"teacher": "resnet8x4", "student": {"name": "mlp", "hidden": [8]}, "student_lr": 0.01}]
    cfg["teacher"]["methods"]["sftn"] = "sftn"
    cfg["teacher"]["train"] = {**TINY_TRAIN, "epochs": 4, "save_every": 2}
    cfg["sweeps"] = [{"role": "student", "method": "kd", "param": "T", "values": [1.0, 4.0, 8.0]}]
    cfg["trajectory"] = {"every": 2, "teachers": ["standard"], "method": "kd"}
    plan = plan_study(load_config(StudyConfig, cfg))
    teachers = [p for p in plan if p.kind == "teacher"]
    # standard and wd0 shared by both pairs; SFTN trained once per student architecture
    assert sorted(str(p.run_dir.relative_to(tmp_path)) for p in teachers) == sorted([
        "teachers/resnet8x4/standard/seed0", "teachers/resnet8x4/wd0/seed0",
        "teachers/resnet8x4/sftn-for-resnet8/seed0", "teachers/resnet8x4/sftn-for-mlp-hidden=8/seed0"])
    sftn = next(p for p in teachers if "for-mlp" in str(p.run_dir))
    assert sftn.config["method"]["student"] == {"name": "mlp", "hidden": [8], "batch_norm": True}
    labels = {p.method_label for p in plan if p.kind == "student"}
    # T=4 is kd itself; so is kd@4: the last checkpoint is the teacher the plain kd students distil from
    assert labels == {"alone", "kd", "kdT2", "kd[T=1.0]", "kd[T=8.0]", "kd@2"}
    traj = [p for p in plan if p.method_label == "kd@2"]
    assert {p.config["teacher"]["checkpoint"] for p in traj} == {"epoch_002"}
    last = [p for p in plan if p.method_label == "kd" and p.teacher_label == "standard"]
    assert last and all(p.info["trajectory_epoch"] == 4 and p.config["teacher"]["checkpoint"] == "last" for p in last)
    assert all("trajectory_epoch" not in p.info for p in plan if p.method_label == "kd" and p.teacher_label == "wd0")
    mlp_runs = [p for p in plan if p.kind == "student" and p.arch.startswith("mlp(hidden=[8])")]
    assert mlp_runs and all(p.config["optim"]["lr"] == 0.01 for p in mlp_runs)


def test_study_config_errors_name_the_key(tmp_path):
    cfg = study_cfg(tmp_path)
    cfg["sweeps"] = [{"role": "teacher", "method": "nope", "param": "x", "values": [1]}]
    with pytest.raises(ConfigError, match="sweeps: teacher method label 'nope'"):
        load_config(StudyConfig, cfg)
    cfg = study_cfg(tmp_path)
    cfg["trajectory"] = {"every": 3}
    with pytest.raises(ConfigError, match="needs teacher.train.save_every"):
        load_config(StudyConfig, cfg)
    cfg = study_cfg(tmp_path)  # a swept parameter is checked before any run starts
    cfg["sweeps"] = [{"role": "student", "method": "kd", "param": "TT", "values": [1, 2]}]
    with pytest.raises(ConfigError, match=r"sweeps\[0\] \(kd.TT=1\): unknown key; did you mean 'T'"):
        load_config(StudyConfig, cfg)
    cfg["sweeps"] = [{"role": "student", "method": "kd", "param": "T", "values": [1, -2]}]
    with pytest.raises(ConfigError, match=r"sweeps\[0\] \(kd.T=-2\): Input should be greater than 0"):
        load_config(StudyConfig, cfg)


def test_pairs_that_disagree_on_a_shared_baseline_are_an_error(tmp_path):
    cfg = study_cfg(tmp_path)
    student = {"name": "mlp", "hidden": [16]}
    cfg["pairs"] = [{"teacher": "resnet8", "student": student, "student_lr": 0.01},
                    {"teacher": "resnet20", "student": student, "student_lr": 0.2}]
    with pytest.raises(ConfigError, match="alone/seed0 would be trained with two different lr"):
        plan_study(load_config(StudyConfig, cfg))
    cfg["pairs"][1]["student_lr"] = 0.01
    assert plan_study(load_config(StudyConfig, cfg))


def test_changed_settings_are_refused_before_anything_is_rewritten(tmp_path):
    cfg = study_cfg(tmp_path / "s", seeds=[0])
    cfg["teacher"]["methods"] = {"standard": "standard"}
    cfg["student"]["methods"] = {"alone": "none"}
    run_study(cfg, log=lambda s: None, report=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").glob("*.*")}
    cfg["student"]["train"] = {**cfg["student"]["train"], "epochs": cfg["student"]["train"]["epochs"] + 1}
    with pytest.raises(ConfigError, match=r"1 run\(s\) in .* were trained with other settings, e.g. .*alone/seed0 "
                                          r"\(train.epochs: "):
        run_study(cfg, log=lambda s: None, report=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").glob("*.*")} == before


def test_a_copied_study_folder_reuses_its_runs(tmp_path):
    import shutil

    cfg = study_cfg(tmp_path / "a", seeds=[0])
    cfg["teacher"]["methods"] = {"standard": "standard"}
    cfg["student"]["methods"] = {"alone": "none", "kd": "kd"}
    first = run_study(cfg, log=lambda s: None, report=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    again = run_study({**cfg, "out_dir": str(tmp_path / "b")}, log=lambda s: None, report=False)
    assert not again.failed and again.ran == 0 and again.reused == first.ran == 3


def _cell(runs, pred):
    mu, sd, n = mean_std([s["top1"] for d, s in runs.items() if pred(d)])
    return f"{mu:.2f} ± {sd:.2f} (n={n})"


def test_study_stop_restart_and_table_matches_run_folders(tmp_path, monkeypatch):
    out = tmp_path / "study"
    original = ArrayLoader.epoch
    calls = {"n": 0}

    def flaky(self, e=0):  # teachers take epochs 1-8; interrupt epoch 2 of the first student run
        calls["n"] += self.shuffle  # count training epochs only, not evaluation passes
        if self.shuffle and calls["n"] == 10:
            raise KeyboardInterrupt
        yield from original(self, e)

    monkeypatch.setattr(ArrayLoader, "epoch", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_study(study_cfg(out), log=lambda s: None)
    monkeypatch.setattr(ArrayLoader, "epoch", original)
    finished_before = {p.parent for p in out.rglob(SUMMARY)}
    assert len(finished_before) == 4
    cut = next(p for p in (out / "students").rglob("seed0") if "alone" in p.parts)
    assert (cut / "checkpoints" / "last.pt").exists() and not RunFolder(cut).summary_file.exists()
    mtimes = {p: RunFolder(p).summary_file.stat().st_mtime_ns for p in finished_before}

    res = run_study(study_cfg(out), log=lambda s: None)
    assert res.reused == 4 and res.ran == 14 - 4 and not res.failed
    assert all(RunFolder(p).summary_file.stat().st_mtime_ns == m for p, m in mtimes.items())  # not rerun
    assert len(list(out.rglob(SUMMARY))) == 14

    runs = {p.parent: json.loads(p.read_text()) for p in out.rglob(SUMMARY)}
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
            for ln in res.table.split("Teacher quality")[0].splitlines() if ln.startswith("|")}
    assert rows["Teacher resnet8"][0] == _cell(runs, lambda d: d.parts[-2] == "standard" and "teachers" in d.parts)
    assert rows["Teacher resnet8"][1].startswith(_cell(runs, lambda d: d.parts[-2] == "wd0" and "teachers" in d.parts))
    alone = _cell(runs, lambda d: "alone" in d.parts)
    assert rows["Student mlp(hidden=[16]) (alone)"] == [alone, alone]
    for m in ("kd", "kdT2"):
        std = _cell(runs, lambda d, m=m: d.parts[-3:-1] == ("standard", m))
        wd0 = _cell(runs, lambda d, m=m: d.parts[-3:-1] == ("wd0", m))
        assert rows[m][0] == std and rows[m][1].startswith(wd0)
        mu = lambda t, m=m: mean_std([s["top1"] for d, s in runs.items() if d.parts[-3:-1] == (t, m)])[0]
        # every seed is paired, so the paired difference is the difference of the means; 2 seeds give no interval
        assert rows[m][1].endswith(f"({mu('wd0') - mu('standard'):+.2f} (n=2: too few seeds for an interval))")
    best = max(mean_std([s["top1"] for d, s in runs.items() if d.parts[-3:-1] == ("standard", m)])[0]
               for m in ("kd", "kdT2"))
    assert rows["**Best**"][0] == f"{best:.2f}"
    assert "agreement %" in res.table and "ECE" in res.table
    csv_rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(csv_rows) == 14 and {r["kind"] for r in csv_rows} == {"teacher", "student"}


def test_parallel_workers_give_the_same_results(tmp_path):
    seq = run_study(study_cfg(tmp_path / "a", seeds=[0]), log=lambda s: None)
    par = run_study(study_cfg(tmp_path / "b", seeds=[0]), log=lambda s: None, workers=2)
    key = lambda r: (r.kind, r.teacher_label, r.method_label)
    assert {key(r): r.get("top1") for r in seq.records} == {key(r): r.get("top1") for r in par.records}
    assert par.ran == 7 and not par.failed
    # each worker trained the two KD students of a teacher as one group
    assert {r.get("group_size") for r in par.records if r.kind == "student" and r.teacher_label} == {2}


_DIES_ONCE = """
import os, signal
from pathlib import Path

import torch.nn as nn

def make(num_classes, in_channels):
    flag = Path(os.environ["KDLAB_TEST_FLAG"])
    if not flag.exists():  # the first run to build this model is killed, as by the kernel's OOM killer
        flag.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_that_crashes_or_kills_its_worker_does_not_stop_the_study(tmp_path, monkeypatch, workers):
    (tmp_path / "dies_once.py").write_text(_DIES_ONCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KDLAB_TEST_FLAG", str(tmp_path / "flag"))
    cfg = study_cfg(tmp_path / "s", seeds=[0])
    cfg["student"]["model"] = {"name": "module", "target": "dies_once:make", "stages": ["1", "3"]}
    if workers == 1:  # in-process: SIGKILL would kill the test; a plain exception stands for the crash
        (tmp_path / "dies_once.py").write_text(_DIES_ONCE.replace("os.kill(os.getpid(), signal.SIGKILL)",
                                                                  "raise RuntimeError('boom')"))
    with pytest.raises(StudyFailedError, match="run.s. of the study failed") as caught:
        run_study(cfg, log=lambda s: None, workers=workers)
    first = caught.value.result
    # the crashed run fails; with 2 workers a run beside it (and what needs that run) may go down with it
    assert first.failed and first.ran == 7 - len(first.failed) and (tmp_path / "s" / "results.csv").exists()
    if workers == 2:  # the cause is named: which worker died, and of what
        assert any("worker process died" in f and "was killed by SIGKILL" in f for f in first.failed), first.failed
    else:
        assert any("boom" in f for f in first.failed)
    again = run_study(cfg, log=lambda s: None, workers=workers, allow_failures=True)
    assert not again.failed and again.ran == len(first.failed) and again.reused == first.ran


def _study_proc(out):
    run_study(study_cfg(out, seeds=[0]), log=lambda s: None)


def test_two_studies_sharing_a_folder_do_not_duplicate_runs(tmp_path):
    out = tmp_path / "shared"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_study_proc, args=(out,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    for metrics in out.rglob("metrics.jsonl"):
        epochs = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
        assert epochs == [1, 2], metrics  # trained once, not twice
    assert len(list(out.rglob(SUMMARY))) == 7


def test_takd_assistant_chain(tmp_path):
    cfg = study_cfg(tmp_path / "takd", seeds=[0])
    del cfg["teacher"]["model"], cfg["student"]["model"]
    cfg["teacher"]["methods"] = {"standard": "standard"}
    cfg["student"]["methods"] = {"alone": "none", "kd": "kd"}
    cfg["pairs"] = [{"teacher": "resnet8x4", "assistant": "resnet8", "student": {"name": "mlp", "hidden": [16]}}]
    plan = plan_study(load_config(StudyConfig, cfg))
    ta = next(p for p in plan if p.kind == "assistant")
    kd = next(p for p in plan if p.method_label == "kd")
    assert ta.config["teacher"]["path"].endswith("teachers/resnet8x4/standard/seed0")
    assert kd.config["teacher"]["path"] == str(ta.run_dir) and kd.needs == [ta.run_dir]
    res = run_study(cfg, log=lambda s: None)
    assert res.ran == 4 and not res.failed  # teacher, assistant, alone, kd
    row = next(ln for ln in res.table.splitlines() if ln.startswith("| Assistant resnet8"))
    ta_top1 = json.loads(RunFolder(ta.run_dir).summary_file.read_text())["top1"]
    assert f"{ta_top1:.2f}" in row
    assert "### resnet8x4 -> resnet8 -> mlp(hidden=[16])" in res.table
