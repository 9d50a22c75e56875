"""``kdlab eval``: a checkpoint's measures on its data set (and against a teacher); and the true-label
probabilities of a run's model on its training points, cached in its run folder for the deviation figure."""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.config import EvalConfig, load_config
from kdlab.core.checkpoint import atomic_write_bytes, load_metadata
from kdlab.core.device import resolve_device
from kdlab.core.errors import CheckpointError, ConfigError
from kdlab.data import DataBundle, DatasetSplit, Split, load_dataset
from kdlab.data.base import evaluation_view, hold_out
from kdlab.engine.predict import predict
from kdlab.runs.diagnostics import diagnose
from kdlab.runs.folder import RunFolder
from kdlab.runs.resolve import checkpoint_model, load_teacher, resolve_checkpoint


def trained_points(data: DataBundle, holdout: float) -> Split | DatasetSplit:
    """The training points of a run on ``data`` (its validation split already set aside, see
    :func:`~kdlab.data.load_dataset`) with ``holdout``, read the way the test split is (no random augmentation).
    The run's hold-out (it depends on the labels only) is taken out of the evaluation view."""
    return hold_out(replace(data, train=evaluation_view(data.train, data.test)), holdout).train


def train_true_label_prob(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, str]:
    """(probability of the true label, true label, the points' key) for every point a finished run trained on: its
    training split after its hold-out, read as the test split is (no augmentation), predicted in evaluation mode
    by ``last.pt`` (the model whose test predictions the run saved).  Two runs with the same key trained on the
    same points in the same order.  Computed once, then read from ``<run_dir>/train_true_prob.npz`` (a finished
    run is never trained again, so the file stays true)."""
    run_dir = Path(run_dir)
    cache = RunFolder(run_dir).train_predictions_file
    if cache.is_file():
        with np.load(cache) as f:
            return f["p_true"], f["labels"], str(f["points"])
    path = resolve_checkpoint(str(run_dir))
    ck_cfg = load_metadata(path).get("config") or {}
    if "data" not in ck_cfg:
        raise CheckpointError(f"{path} does not record its data set; cannot rebuild its training points")
    cfg = load_config(EvalConfig, {"path": str(run_dir), "data": ck_cfg["data"],
                                   "holdout": ck_cfg.get("holdout", 0.0)})
    seed = ck_cfg.get("seed", 0)
    full = load_dataset(cfg.data, seed=seed)  # without its validation split, which the run did not train on
    train = trained_points(full, cfg.holdout)
    device = resolve_device("auto")
    model, _ = checkpoint_model(path, full, device, role="evaluated")
    batch = (ck_cfg.get("train") or {}).get("eval_batch_size", 512)
    logits = predict(model, full.eval_loader(train, batch, device))
    labels = train.y.cpu().long()
    p_true = torch.softmax(logits.double(), 1).gather(1, labels[:, None]).flatten().numpy()
    # the validation split is drawn from the seed: then the seed says which points the run trained on too
    points = json.dumps({"data": cfg.data.model_dump(), "holdout": cfg.holdout,
                         **({"seed": seed} if cfg.data.val_fraction else {})}, sort_keys=True)
    buf = io.BytesIO()
    np.savez(buf, p_true=p_true, labels=labels.numpy(), points=np.array(points))
    atomic_write_bytes(cache, buf.getvalue())  # a concurrent report sees no file or the whole file
    return p_true, labels.numpy(), points


def evaluate(config: Any, overrides: list[str] = ()) -> dict[str, Any]:
    """Metrics of a checkpoint on a data set's test split (and its agreement with a teacher, if given)."""
    cfg = load_config(EvalConfig, config, overrides)
    device = resolve_device(cfg.device)
    path = resolve_checkpoint(cfg.path, cfg.checkpoint)
    ck_cfg = load_metadata(path).get("config") or {}
    if cfg.data is not None:
        data_spec = cfg.data
    elif "data" in ck_cfg:
        data_spec = load_config(EvalConfig, {"path": cfg.path, "data": ck_cfg["data"]}).data
    else:
        raise ConfigError("data: the checkpoint does not record its data set; set data.name")
    holdout = cfg.holdout if cfg.holdout is not None else ck_cfg.get("holdout", 0.0)
    trained = ck_cfg.get("holdout")
    if cfg.data is None and trained is not None and holdout > trained:
        # held-out splits are nested (one seeded order per class): a larger one includes trained-on samples
        raise ConfigError(f"holdout: {holdout} is more than the {trained} this run held out of its training; the "
                          f"temperature would be fitted on samples the model trained on (use holdout <= {trained})")
    data = load_dataset(data_spec, holdout, ck_cfg.get("seed", 0))  # the run's validation split, if it had one
    model, ck = checkpoint_model(path, data, device, role="evaluated")
    teacher = load_teacher(cfg.teacher, data, device)[0] if cfg.teacher is not None else None
    measures, _ = diagnose(model, data, device, cfg.batch_size, teacher)
    return {"checkpoint": str(path), "dataset": data.name, "model": ck["model"]["name"], "epoch": ck.get("epoch"),
            **measures}
