"""A run with a validation split, read back: ``kdlab eval`` rebuilds the run's split (from the checkpoint's seed)
and fits the temperature on it; the deviation figure's training points leave it out."""

import numpy as np
import pytest
import torch

from conftest import TINY_DATA, teacher_cfg
from kdlab.config import TeacherRunConfig, load_config
from kdlab.core.metrics import fit_temperature
from kdlab.data import load_dataset
from kdlab.engine.predict import predict
from kdlab.runs.evaluate import evaluate, train_true_label_prob
from kdlab.runs.folder import RunFolder
from kdlab.runs.resolve import checkpoint_model
from kdlab.runs.teacher import train_teacher


def test_eval_and_training_points_of_a_run_with_a_validation_split(tmp_path):
    cfg = teacher_cfg(tmp_path / "t", seed=1, data={**TINY_DATA, "val_fraction": 0.25}, model="mlp")
    t = train_teacher(cfg)
    data = load_dataset(load_config(TeacherRunConfig, cfg).data, 0.0, 1)  # the run's own split (seed 1)
    model, _ = checkpoint_model(RunFolder(t.run_dir).checkpoint("last"), data, torch.device("cpu"))
    measured = evaluate({"path": str(t.run_dir)})
    expected = fit_temperature(predict(model, data.eval_loader("val")), data.val.y)
    assert measured["temperature"] == pytest.approx(expected, rel=1e-6) == t.summary["temperature"]
    p_true, labels, points = train_true_label_prob(t.run_dir)
    assert len(labels) == len(data.train) == 144 and np.array_equal(labels, data.train.y.numpy())
    assert '"seed": 1' in points  # the points depend on the seed that drew the split
