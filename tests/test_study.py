import csv
import json

import pytest

from conftest import TINY_DATA, TINY_TRAIN
from kdlab.data.base import ArrayLoader
from kdlab.study import plan_study, run_study
from kdlab.study.table import mean_std


def study_cfg(out):
    return {
        "name": "tiny", "out_dir": str(out), "seeds": [0, 1], "data": dict(TINY_DATA),
        "teacher": {"model": "resnet8", "methods": {"standard": "standard", "wd0": "standard"},
                    "train": dict(TINY_TRAIN), "schedule": {"milestones": [1]}},
        "student": {"model": {"name": "mlp", "hidden": [16]},
                    "methods": {"alone": "none", "kd": "kd", "kdT2": {"name": "kd", "T": 2}},
                    "train": dict(TINY_TRAIN), "schedule": {"milestones": [1]}},
    }


def test_plan_trains_each_teacher_once_and_alone_once_per_seed(tmp_path):
    from kdlab.config import StudyConfig, load_config

    plan = plan_study(load_config(StudyConfig, study_cfg(tmp_path)))
    kinds = [(p.kind, p.teacher_label, p.method_label, p.seed) for p in plan]
    assert len(kinds) == len(set(kinds)) == 4 + 2 + 8
    assert sum(1 for k in kinds if k[0] == "teacher") == 4
    assert sum(1 for k in kinds if k[2] == "alone") == 2
    kd = next(p for p in plan if p.method_label == "kd" and p.teacher_label == "wd0" and p.seed == 1)
    assert kd.config["teacher"]["path"] == str(tmp_path / "teachers" / "wd0" / "seed1")


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
    finished_before = {p.parent for p in out.rglob("summary.json")}
    assert len(finished_before) == 4
    cut = out / "students" / "alone" / "seed0"
    assert (cut / "checkpoints" / "last.pt").exists() and not (cut / "summary.json").exists()
    mtimes = {p: (p / "summary.json").stat().st_mtime_ns for p in finished_before}

    res = run_study(study_cfg(out), log=lambda s: None)
    assert res.reused == 4 and res.ran == 14 - 4
    assert all((p / "summary.json").stat().st_mtime_ns == m for p, m in mtimes.items())  # not rerun
    assert len(list(out.rglob("summary.json"))) == 14

    # every number in the table is the mean/std of the run folders' summaries
    runs = {p.parent: json.loads(p.read_text()) for p in out.rglob("summary.json")}

    def cell(pred):
        mu, sd, n = mean_std([s["top1"] for d, s in runs.items() if pred(d)])
        return f"{mu:.2f} ± {sd:.2f} (n={n})"

    lines = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
             for ln in res.table.splitlines() if ln.startswith("| standard") or ln.startswith("| wd0")}
    for t in ("standard", "wd0"):
        row = lines[t]
        assert row[0] == cell(lambda p, t=t: "teachers" in p.parts and t in p.parts)
        assert row[2] == cell(lambda p: "alone" in p.parts)
        assert row[3] == cell(lambda p, t=t: p.parts[-3:-1] == (t, "kd"))
        assert row[4] == cell(lambda p, t=t: p.parts[-3:-1] == (t, "kdT2"))
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 14 and {r["kind"] for r in rows} == {"teacher", "student"}
    assert (out / "results.md").read_text().count("| standard") == 1
