"""The deviation figure on the training points (``split="train"``): the probabilities it plots are the final
checkpoints' on the points each run trained on (its hold-out excluded), computed once and kept in the run folder."""

from pathlib import Path

import numpy as np
import pytest
import torch

import kdlab.runs.evaluate
from conftest import TINY_DATA, TINY_TRAIN
from kdlab.analysis.prediction_figures import deviation_points, plot_deviation
from kdlab.analysis.study_command import run_study
from kdlab.cli.main import main
from kdlab.config import EvalConfig, load_config
from kdlab.data import load_dataset
from kdlab.runs.folder import TRAIN_PREDICTIONS  # noqa: F401
from kdlab.runs.resolve import checkpoint_model, resolve_checkpoint
from kdlab.study.records import StudyDataError, load_study

HOLDOUT = 0.25


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """1 teacher method, a KD student and a student alone, 2 seeds, a quarter of the training data held out."""
    out = tmp_path_factory.mktemp("deviation") / "study"
    cfg = {"name": "tiny-deviation", "out_dir": str(out), "seeds": [0, 1], "data": dict(TINY_DATA),
           "holdout": HOLDOUT,
           "teacher": {"model": {"name": "mlp", "hidden": [32]}, "methods": {"standard": "standard"},
                       "train": dict(TINY_TRAIN), "schedule": {"milestones": [1]}},
           "student": {"model": {"name": "mlp", "hidden": [16]}, "methods": {"alone": "none", "kd": "kd"},
                       "train": dict(TINY_TRAIN), "schedule": {"milestones": [1]}}}
    res = run_study(cfg, log=lambda s: None)
    assert not res.failed and len(res.records) == 6
    return out


def by_hand(run_dir: Path, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The run's softmax probability of the true label on its first ``k`` training points, straight from its
    checkpoint and the data set as the run loaded it (with its hold-out)."""
    path = resolve_checkpoint(str(run_dir))
    model, ck = checkpoint_model(path, None, torch.device("cpu"))
    cfg = load_config(EvalConfig, {"path": str(run_dir), "data": ck["config"]["data"]})
    data = load_dataset(cfg.data, ck["config"]["holdout"])
    x, y = data.train.x[:k], data.train.y[:k]
    if data.prepare is not None:
        x = data.prepare(x)
    with torch.no_grad():
        p = torch.softmax(model(x).double(), 1)
    return p[torch.arange(k), y].numpy(), np.array([len(data.train), len(data.train) + len(data.holdout)])


def test_train_points_are_the_checkpoints_predictions_on_the_trained_on_points(study, tmp_path, monkeypatch):
    records = load_study(study).records
    teacher, (panel,) = deviation_points(records, split="train")
    assert (teacher, panel.method, panel.seeds, panel.alone, panel.seeds_alone) == ("standard", "kd", [0, 1],
                                                                                      "alone", [0, 1])
    runs = {(r.kind, r.method_label, r.seed): r.run_dir for r in records}
    k = 5
    for i, seed in enumerate(panel.seeds):
        t, sizes = by_hand(runs["teacher", "standard", seed], k)
        n = sizes[0]
        assert sizes[1] == TINY_DATA["num_train"] and n == round(TINY_DATA["num_train"] * (1 - HOLDOUT))
        assert len(panel.x) == len(panel.x_alone) == 2 * n  # each seed's trained-on points only
        assert panel.x[i * n:i * n + k] == pytest.approx(t, abs=1e-6)
        assert panel.x_alone[i * n:i * n + k] == pytest.approx(t, abs=1e-6)
        assert panel.y[i * n:i * n + k] == pytest.approx(by_hand(runs["student", "kd", seed], k)[0], abs=1e-6)
        assert panel.y_alone[i * n:i * n + k] == pytest.approx(by_hand(runs["student", "alone", seed], k)[0],
                                                               abs=1e-6)
    _, (test_panel,) = deviation_points(records)  # the test split: the saved test predictions, as before
    assert len(test_panel.x) == 2 * TINY_DATA["num_test"]

    # kept in the run folders: a second figure loads no model
    assert all((d / TRAIN_PREDICTIONS).is_file() for d in runs.values())
    monkeypatch.setattr(kdlab.runs.evaluate, "checkpoint_model", lambda *a, **k: pytest.fail("predicted again"))
    out = plot_deviation(records, tmp_path / "train.png", split="train")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, (again,) = deviation_points(records, split="train")
    assert np.array_equal(again.x, panel.x) and np.array_equal(again.y_alone, panel.y_alone)


def test_teacher_and_student_trained_on_other_points_is_an_error(study, monkeypatch):
    records = load_study(study).records
    real = kdlab.runs.evaluate.train_true_label_prob

    def other_points(run_dir):
        p, y, points = real(run_dir)
        return p, y, points + " (another hold-out)" if "students" in Path(run_dir).parts else points

    monkeypatch.setattr(kdlab.runs.evaluate, "train_true_label_prob", other_points)
    with pytest.raises(StudyDataError, match="were not trained on the same points"):
        deviation_points(records, split="train")
    with pytest.raises(StudyDataError, match="split 'val' is not one of test, train"):
        deviation_points(records, split="val")


def test_cli_split(study, tmp_path, capsys):
    out = tmp_path / "d.png"
    assert main(["plot", "deviation", str(study), "--split", "train", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.stat().st_size > 1024
    assert main(["plot", "reliability", str(study), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "--split applies to the deviation figure only" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        main(["plot", "--help"])
    assert e.value.code == 0 and "--split {test,train}" in capsys.readouterr().out


class _Files(torch.utils.data.Dataset):
    """A file-style data set: item i is its index through ``transform`` (the training one marks it negative)."""

    def __init__(self, n: int, transform):
        self.n, self.transform = n, transform

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.transform(torch.tensor([float(i)])), i % 2


def test_trained_points_of_a_file_data_set_skip_its_hold_out_and_its_augmentation():
    from kdlab.data import DataBundle, DatasetSplit
    from kdlab.data.base import hold_out
    from kdlab.runs.evaluate import trained_points

    def split(n, transform):
        return DatasetSplit(_Files(n, transform), torch.arange(n) % 2)

    data = DataBundle("files", split(40, lambda x: -x), split(10, lambda x: x), 2, (1,))
    trained = hold_out(data, HOLDOUT).train  # what the run trained on, augmented
    points = trained_points(data, HOLDOUT)
    assert len(points) == len(trained) == 30 and torch.equal(points.y, trained.y)
    assert [points.dataset[i][0].item() for i in range(3)] == [-trained.dataset[i][0].item() for i in range(3)]
    assert all(points.dataset[i][0].item() >= 0 for i in range(len(points)))
