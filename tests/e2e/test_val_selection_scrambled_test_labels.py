"""The point of ``data.val_fraction``: the best epochs a study reports (best.pt, best_epoch, a student distilled from
its teacher's best checkpoint) are chosen without looking at the test labels.  Scrambling the test labels leaves
every selection and every best.pt as it was; without a validation split the same scrambling changes the selection.

The test labels are scrambled adversarially: replaced by the predictions of the model at another epoch, so that a
choice made on test top-1 must move to that epoch (it scores 100 % there)."""

import csv
import json

import numpy as np
import torch

from kdlab.api import run_study
from kdlab.core.checkpoint import load_checkpoint
from kdlab.runs.folder import RunFolder
from kdlab.runs.resolve import checkpoint_model
from kdlab.runs.teacher import train_teacher

TRAIN = {"epochs": 6, "batch_size": 32, "progress": "off", "save_every": 1}


def write_blobs(folder, test_y=None):
    """Three overlapping Gaussian classes in 8 dimensions (noisy enough that accuracy moves from epoch to epoch);
    ``test_y``: other test labels for the same inputs."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    folder.mkdir(parents=True)
    for name, n in (("train", 240), ("test", 120)):
        y = np.arange(n) % 3
        x = (centres[y] + 1.5 * rng.normal(size=(n, 8))).astype(np.float32)
        np.savez(folder / f"{name}.npz", x=x, y=test_y if name == "test" and test_y is not None else y)
    return folder


def records(run_dir):
    return [json.loads(x) for x in RunFolder(run_dir).metrics_file.read_text().splitlines()]


def weights(run_dir, name="best"):
    return load_checkpoint(RunFolder(run_dir).checkpoint(name))["model_state"]


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def first_best(values):
    return 1 + max(range(len(values)), key=lambda i: (values[i], -i))


def adversarial_labels(run_dir, root) -> tuple[np.ndarray, int]:
    """The predictions on the test inputs of the run's epoch whose test top-1 is furthest from its best epoch's
    (so they differ from the best epoch's predictions), and that epoch."""
    recs = records(run_dir)
    best = json.loads(RunFolder(run_dir).summary_file.read_text())["best_epoch"]
    k = max(range(1, len(recs) + 1), key=lambda e: abs(recs[e - 1]["test_top1"] - recs[best - 1]["test_top1"]))
    assert recs[k - 1]["test_top1"] != recs[best - 1]["test_top1"]  # another epoch that predicts otherwise
    model, _ = checkpoint_model(RunFolder(run_dir).epoch_checkpoint(k), None, torch.device("cpu"))
    with torch.no_grad():
        x = torch.from_numpy(np.load(root / "test.npz")["x"])
        return model(x).argmax(1).numpy(), k


def study(out, root):
    return {"name": "val-selection", "out_dir": str(out), "seeds": [0],
            "data": {"name": "arrays", "root": str(root), "num_classes": 3, "val_fraction": 0.25},
            "teacher": {"model": {"name": "mlp", "hidden": [32]}, "methods": {"standard": "standard"},
                        "optim": {"lr": 0.3}, "train": TRAIN, "schedule": {"milestones": []}},
            "student": {"model": {"name": "mlp", "hidden": [16]}, "methods": {"kd": "kd"}, "optim": {"lr": 0.3},
                        "train": TRAIN, "schedule": {"milestones": []}, "teacher_checkpoint": "best"}}


def runs(result):
    return {r.kind: r for r in result.records}


def test_a_study_with_a_validation_split_selects_the_same_epochs_whatever_the_test_labels(tmp_path):
    real = write_blobs(tmp_path / "real")
    first = runs(run_study(study(tmp_path / "a", real), report=False))
    scrambled_y, k = adversarial_labels(first["teacher"].run_dir, real)
    scrambled = write_blobs(tmp_path / "scrambled", test_y=scrambled_y)
    again = runs(run_study(study(tmp_path / "b", scrambled), report=False))

    t_recs = records(again["teacher"].run_dir)
    assert t_recs[k - 1]["test_top1"] == 100.0  # on these labels a choice made on test would be epoch k ...
    assert first_best([r["test_top1"] for r in t_recs]) != first["teacher"]["best_epoch"]  # ... not this one
    for kind in ("teacher", "student"):
        a, b = first[kind], again[kind]
        assert a["selected_on"] == b["selected_on"] == "val"
        assert a["best_epoch"] == b["best_epoch"], kind
        assert [r["val_top1"] for r in records(a.run_dir)] == [r["val_top1"] for r in records(b.run_dir)]
        assert same(weights(a.run_dir), weights(b.run_dir)), kind  # best.pt: the same epoch's same weights
        assert same(weights(a.run_dir, "last"), weights(b.run_dir, "last"))  # the test labels train nothing
    assert again["student"]["teacher_selected_on"] == "val"  # the teacher's best.pt was chosen on validation
    rows = list(csv.DictReader((tmp_path / "b" / "results.csv").open()))
    assert {r["selected_on"] for r in rows} == {"val"} and all(float(r["val_top1"]) >= 0 for r in rows)
    caption = (tmp_path / "b" / "results.md").read_text()
    assert "the validation split for temperature scaling" in caption and "validation split 0.25" in caption


def test_without_a_validation_split_scrambled_test_labels_change_the_selection(tmp_path):
    real = write_blobs(tmp_path / "real")
    teacher = lambda root, d: {"seed": 0, "out_dir": str(d), "model": {"name": "mlp", "hidden": [32]},  # noqa: E731
                               "data": {"name": "arrays", "root": str(root), "num_classes": 3},
                               "optim": {"lr": 0.3}, "train": TRAIN, "schedule": {"milestones": []}}
    first = train_teacher(teacher(real, tmp_path / "a"))
    scrambled_y, k = adversarial_labels(first.run_dir, real)
    again = train_teacher(teacher(write_blobs(tmp_path / "scrambled", test_y=scrambled_y), tmp_path / "b"))
    assert first.summary["selected_on"] == again.summary["selected_on"] == "test"
    assert same(weights(first.run_dir, "last"), weights(again.run_dir, "last"))  # the same training ...
    assert again.summary["best_epoch"] != first.summary["best_epoch"]  # ... another "best" epoch
    assert not same(weights(first.run_dir), weights(again.run_dir))
