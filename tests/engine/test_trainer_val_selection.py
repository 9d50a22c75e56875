"""With a validation split (``data.val_fraction``) the loop evaluates it at the test epochs and chooses the best
epoch (best.pt, the summary's best_epoch) on it; the test split is then reported only.  A resumed run, from a
checkpoint of this version or one written before the best record named its split, goes on exactly."""

import json
import math

import pytest
import torch

from conftest import TINY_DATA, TINY_TRAIN, interrupt_training, teacher_cfg
from kdlab.core.checkpoint import load_checkpoint, load_metadata, save_checkpoint
from kdlab.core.metrics import fit_temperature
from kdlab.engine.predict import predict
from kdlab.engine.sinks import tensorboard_tag
from kdlab.engine.trainer import _best_of
from kdlab.runs.folder import RunFolder
from kdlab.runs.resolve import checkpoint_model
from kdlab.runs.teacher import train_teacher

VAL_DATA = {**TINY_DATA, "val_fraction": 0.25}
TRAIN = {**TINY_TRAIN, "epochs": 5, "save_every": 1}


def records(run_dir):
    return [json.loads(x) for x in RunFolder(run_dir).metrics_file.read_text().splitlines()]


def first_best(values):
    """The epoch (1-based) of the first highest value, as a strictly-better rule keeps it."""
    best = max(v for v in values if v is not None)
    return next(i + 1 for i, v in enumerate(values) if v == best)


def test_the_best_epoch_is_chosen_on_validation_and_the_test_split_is_only_reported(tmp_path):
    # a large constant learning rate: the accuracies go up and down, and the two splits peak at different epochs
    t = train_teacher(teacher_cfg(tmp_path / "t", data=VAL_DATA, train=TRAIN, schedule={"milestones": []},
                                  optim={"lr": 0.3}))
    recs = records(t.run_dir)
    assert all({"val_top1", "val_nll", "test_top1", "test_nll"} <= set(r) for r in recs)
    chosen = first_best([r["val_top1"] for r in recs])
    assert first_best([r["test_top1"] for r in recs]) != chosen  # else this run could not tell the rules apart
    s = t.summary
    assert s["selected_on"] == "val" and s["best_epoch"] == chosen
    assert s["best_top1"] == recs[chosen - 1]["test_top1"]  # the test top-1 at the chosen epoch
    assert s["val_top1"] == recs[-1]["val_top1"]  # the final model's
    best = load_metadata(RunFolder(t.run_dir).checkpoint("best"))
    assert best["epoch"] == chosen
    assert best["best"] == {"epoch": chosen, "test_top1": s["best_top1"], "selected_on": "val",
                            "val_top1": recs[chosen - 1]["val_top1"]}
    a = load_checkpoint(RunFolder(t.run_dir).checkpoint("best"))["model_state"]
    b = load_checkpoint(RunFolder(t.run_dir).epoch_checkpoint(chosen))["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # best.pt holds the chosen epoch's weights


def test_without_a_validation_split_the_test_split_chooses_as_before(tmp_path):
    t = train_teacher(teacher_cfg(tmp_path / "t", train=TRAIN, schedule={"milestones": [3]}))
    recs = records(t.run_dir)
    assert not any("val_top1" in r for r in recs)
    assert t.summary["selected_on"] == "test" and "val_top1" not in t.summary
    assert t.summary["best_epoch"] == first_best([r["test_top1"] for r in recs])
    assert load_metadata(RunFolder(t.run_dir).checkpoint("best"))["best"]["selected_on"] == "test"


def test_the_temperature_is_fitted_on_the_validation_split_unless_there_is_a_holdout(tmp_path):
    from kdlab.config import TeacherRunConfig, load_config
    from kdlab.data import load_dataset

    for holdout, fitted_on in ((0.0, "val"), (0.2, "holdout")):
        cfg = teacher_cfg(tmp_path / f"t{holdout}", data=VAL_DATA, holdout=holdout)
        t = train_teacher(cfg)
        data = load_dataset(load_config(TeacherRunConfig, cfg).data, holdout, 0)
        model, _ = checkpoint_model(RunFolder(t.run_dir).checkpoint("last"), data, torch.device("cpu"))
        split = getattr(data, fitted_on)
        expected = fit_temperature(predict(model, data.eval_loader(split)), split.y)
        assert t.summary["temperature"] == pytest.approx(expected, rel=1e-6), fitted_on


def test_resuming_a_run_with_a_validation_split_matches_the_uninterrupted_run(tmp_path, monkeypatch):
    train = {**TRAIN, "eval_every": 2}
    make = lambda d: teacher_cfg(d, data=VAL_DATA, train=train, schedule={"milestones": [2]})  # noqa: E731
    full = train_teacher(make(tmp_path / "full"))
    recs = records(tmp_path / "full")
    evaluated = [r["epoch"] for r in recs if "val_top1" in r]
    assert evaluated == [r["epoch"] for r in recs if "test_top1" in r] == [2, 4, 5]  # the same epochs
    restore = interrupt_training(monkeypatch, epoch=3, step=2)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(make(tmp_path / "cut"))
    assert load_checkpoint(RunFolder(tmp_path / "cut").checkpoint("last"))["epoch"] == 3
    restore()
    resumed = train_teacher(make(tmp_path / "cut"), resume=True)
    for name in ("last", "best"):
        a, b = (load_checkpoint(RunFolder(d).checkpoint(name)) for d in (tmp_path / "full", tmp_path / "cut"))
        assert a["best"] == b["best"] and a["epoch"] == b["epoch"]
        assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"]), name
    strip = lambda rs: [{k: v for k, v in r.items() if k != "train_time"} for r in rs]  # noqa: E731
    assert strip(records(tmp_path / "cut")) == strip(records(tmp_path / "full"))
    timing = {"train_time"}
    assert {k: v for k, v in resumed.summary.items() if k not in timing} == \
        {k: v for k, v in full.summary.items() if k not in timing}


def test_a_checkpoint_whose_best_record_predates_the_split_key_resumes(tmp_path, monkeypatch):
    make = lambda d: teacher_cfg(d, train=TRAIN, schedule={"milestones": [2]})  # noqa: E731
    full = train_teacher(make(tmp_path / "full"))
    restore = interrupt_training(monkeypatch, epoch=3, step=2)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(make(tmp_path / "cut"))
    restore()
    last = RunFolder(tmp_path / "cut").checkpoint("last")
    ck = load_checkpoint(last)
    ck["best"] = {"epoch": ck["best"]["epoch"], "test_top1": ck["best"]["test_top1"]}  # as an older kdlab wrote it
    save_checkpoint(last, ck)
    resumed = train_teacher(make(tmp_path / "cut"), resume=True)
    assert resumed.summary["best_epoch"] == full.summary["best_epoch"]
    assert resumed.summary["selected_on"] == "test"
    assert load_metadata(RunFolder(tmp_path / "cut").checkpoint("last"))["best"] == \
        load_metadata(RunFolder(tmp_path / "full").checkpoint("last"))["best"]


def test_the_best_record_to_go_on_from():
    fresh = {"epoch": 0, "test_top1": -math.inf, "selected_on": "val", "val_top1": -math.inf}
    assert _best_of({}, "val") == fresh
    none_yet = {"epoch": 0, "test_top1": -math.inf}  # what a checkpoint-less resume gives
    assert _best_of(none_yet, "test") == {**none_yet, "selected_on": "test"}
    old = {"epoch": 3, "test_top1": 70.0}  # written before the record named its split: chosen on test
    assert _best_of(old, "test") == {"epoch": 3, "test_top1": 70.0, "selected_on": "test"}
    assert _best_of(old, "val") == fresh  # never taken as a validation choice
    mine = {"epoch": 2, "test_top1": 60.0, "selected_on": "val", "val_top1": 65.0}
    assert _best_of(mine, "val") == mine


def test_validation_measures_have_their_own_tensorboard_group():
    assert tensorboard_tag("val_top1") == "val/top1" and tensorboard_tag("val_nll") == "val/nll"
    assert tensorboard_tag("test_top1") == "test/top1"
