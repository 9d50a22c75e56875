"""kdlab tune with real (tiny) runs: each trial a finished run folder scored by its validation top-1, the best
config retraining to the best trial's result, a pruned trial's folder left an unfinished run, and a search
interrupted mid-trial continuing that trial's run from its checkpoint."""

import csv
import json

import pytest
import yaml

from kdlab.analysis.tune import tune
from kdlab.runs.folder import RunFolder
from kdlab.runs.teacher import train_teacher

BASE = {"seed": 0, "data": {"name": "digits", "val_fraction": 0.1}, "model": {"name": "mlp", "hidden": [16]},
        "optim": {"lr": 0.05}, "schedule": {"name": "constant"},
        "train": {"epochs": 3, "batch_size": 64, "progress": "off", "tensorboard": False}}


@pytest.fixture(autouse=True)
def _no_plot(monkeypatch):
    """Drawing search.png takes a second (tests/analysis/test_tune.py looks at it)."""
    monkeypatch.setattr("kdlab.analysis.tune.plot_search", lambda *a, **k: None)


def search(tmp_path, **kw):
    cfg = {"base": BASE, "search": {"optim.lr": {"float": [1e-3, 0.5], "log": True}}, "trials": 3,
           "pruner": "none", "out_dir": str(tmp_path / "tune")}
    cfg.update(kw)
    return cfg


def rows(tmp_path):
    with open(tmp_path / "tune" / "trials.csv") as f:
        return list(csv.DictReader(f))


def metrics(run_dir):
    return [json.loads(line) for line in RunFolder(run_dir).metrics_file.read_text().splitlines()]


def test_each_trial_is_a_run_scored_on_validation_and_the_best_config_retrains_to_it(tmp_path):
    res = tune(search(tmp_path))
    out = tmp_path / "tune"
    assert [r["state"] for r in rows(tmp_path)] == ["complete"] * 3
    for r in rows(tmp_path):
        folder = RunFolder(out / r["run_dir"])
        assert folder.is_finished()
        summary = json.loads(folder.summary_file.read_text())
        assert float(r["value"]) == pytest.approx(summary["val_top1"]) == pytest.approx(
            metrics(folder.path)[-1]["val_top1"])
        assert yaml.safe_load(folder.config_file.read_text())["optim"]["lr"] == pytest.approx(float(r["optim.lr"]))
    best = max(rows(tmp_path), key=lambda r: float(r["value"]))
    assert res.best["trial"] == int(best["trial"])
    # best.yaml is a train-teacher config: trained again it gives the best trial's result (runs are deterministic)
    again = train_teacher(str(out / "best.yaml"), [f"out_dir={tmp_path / 'again'}"])
    assert again.summary["val_top1"] == pytest.approx(float(best["value"]))


def test_a_pruned_trial_leaves_an_unfinished_run(tmp_path):
    res = tune(search(tmp_path, search={"optim.lr": {"choice": [0.3, 1e-6]}}, trials=4, pruner="median",
                      pruner_startup_trials=1, pruner_warmup_epochs=0))
    pruned = [r for r in rows(tmp_path) if r["state"] == "pruned"]
    assert pruned and res.counts()["pruned"] == len(pruned)
    for r in pruned:
        assert float(r["optim.lr"]) == 1e-6  # the learning rate that cannot learn in three epochs
        folder = RunFolder(tmp_path / "tune" / r["run_dir"])
        assert folder.has_run() and not folder.is_finished() and not folder.manifest_file.exists()
        assert len(metrics(folder.path)) == int(r["epochs"]) < 3


def test_an_interrupted_search_continues_the_trial_from_its_checkpoint(tmp_path):
    def interrupting(mapping, overrides, resume, hooks):
        def stop(epoch, rec):
            if mapping["out_dir"].endswith("trial-001") and epoch == 2:
                raise KeyboardInterrupt  # as Ctrl-C after the epoch's checkpoint
        return train_teacher(mapping, overrides, resume=resume, hooks=[*hooks, stop])

    with pytest.raises(KeyboardInterrupt):
        tune(search(tmp_path), run=interrupting)
    run_dir = tmp_path / "tune" / "trials" / "trial-001"
    before = metrics(run_dir)
    assert len(before) == 2 and not RunFolder(run_dir).is_finished()
    tune(search(tmp_path))
    table = rows(tmp_path)
    assert [(r["trial"], r["state"]) for r in table] == [("0", "complete"), ("1", "interrupted"),
                                                         ("2", "complete"), ("3", "complete")]
    assert table[1]["note"] == "continued by trial 2" and table[2]["note"] == "continues trial 1"
    assert table[2]["run_dir"] == "trials/trial-001" and table[2]["optim.lr"] == table[1]["optim.lr"]
    assert table[2]["epochs"] == "3"  # epochs 1-2 reported before the interruption, 3 after
    after = metrics(run_dir)
    # resumed, not trained again: the first two epochs' records (their measured times included) are the same
    assert len(after) == 3 and after[:2] == before
    assert len({r["run_dir"] for r in table if r["state"] == "complete"}) == 3
