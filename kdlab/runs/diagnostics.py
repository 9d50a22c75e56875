"""What a run reports about a trained model: accuracy, calibration (before and after temperature scaling),
distance to the true label distribution, and agreement / KL / CKA with a teacher and the teacher's own measures."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn as nn
from torch import Tensor

from kdlab.core.metrics import (
    agreement,
    calibration_metrics,
    classification_metrics,
    fit_temperature,
    kl_divergence,
    l1_to_distribution,
    linear_cka,
)
from kdlab.data.base import DataBundle
from kdlab.engine.predict import predict, predict_with_embeddings

CKA_SAMPLES = 5000  # linear CKA of n x d representations; more samples add little


def pstar_metrics(logits_by_split: dict[str, Tensor], data: DataBundle) -> dict[str, float]:
    out = {}
    for name, logits in logits_by_split.items():
        split = getattr(data, name)
        if split is not None and "p_star" in split.extras:
            out[f"pstar_l1_{name}"] = l1_to_distribution(logits, split.extras["p_star"])
    return out


class TeacherPredictions(NamedTuple):
    """A teacher's test logits and embeddings and its own measures (``teacher_*``): a group of students of one
    teacher computes them once.  For a student of a checkpoint (a trajectory) they are the checkpoint's."""

    logits: Tensor
    embeddings: Tensor
    measures: dict[str, float]


def teacher_predictions(teacher: nn.Module, data: DataBundle, device: torch.device, batch_size: int = 512,
                        num_workers: int = 0) -> TeacherPredictions:
    def loader(split):
        return data.eval_loader(split, batch_size, device, num_workers)

    logits, emb = predict_with_embeddings(teacher, loader("test"))
    m = classification_metrics(logits, data.test.y)
    measures = {"teacher_top1": m["top1"], "teacher_nll": m["nll"], "teacher_ece": m["ece"]}
    splits = {"test": logits}
    if "p_star" in data.train.extras:  # the training inputs in eval mode, as a run's own pstar_l1_train
        splits["train"] = predict(teacher, loader("train"))
    measures.update({f"teacher_{k}": v for k, v in pstar_metrics(splits, data).items()})
    return TeacherPredictions(logits, emb, measures)


def diagnose(model: nn.Module, data: DataBundle, device: torch.device, batch_size: int = 512,
             teacher: nn.Module | None = None, num_workers: int = 0,
             test: tuple[Tensor, Tensor | None] | None = None,
             teacher_test: TeacherPredictions | None = None) -> tuple[dict[str, Any], Tensor]:
    """All reported measures of ``model`` (and of its relation to ``teacher``, and the teacher's own); also
    returns the test logits.

    Temperature scaling (``nll_ts``, ``ece_ts``, ``temperature``) fits the temperature on the held-out split
    (``holdout``) when the data have one, else on the validation split (``data.val_fraction``); with neither
    it is not measured.

    ``test``: the model's test logits and embeddings if already predicted (the training loop's last evaluation),
    so the test set is not run through the model again; ``teacher_test``: the teacher's
    :func:`teacher_predictions` if already made (a group of students of one teacher makes them once)."""

    def loader(split):
        return data.eval_loader(split, batch_size, device, num_workers)

    if test is not None and (test[1] is not None or teacher is None):
        logits, emb = test
    else:
        logits, emb = predict_with_embeddings(model, loader("test"))
    out: dict[str, Any] = classification_metrics(logits, data.test.y)
    splits = {"test": logits}
    if "p_star" in data.train.extras:
        splits["train"] = predict(model, loader("train"))
    out.update(pstar_metrics(splits, data))
    fit_on = "holdout" if data.holdout is not None else "val" if data.val is not None else None
    if fit_on is not None:  # the temperature is fitted on data the model did not train on, never on the test split
        held = predict(model, loader(fit_on))
        out.update(calibration_metrics(logits, data.test.y, fit_temperature(held, getattr(data, fit_on).y)))
    if teacher is not None:
        if teacher_test is None:
            teacher_test = teacher_predictions(teacher, data, device, batch_size, num_workers)
        t_logits, t_emb, t_measures = teacher_test
        n = min(len(emb), CKA_SAMPLES)
        out.update({
            **t_measures,
            "agreement": agreement(logits, t_logits),
            "kl_teacher_student": kl_divergence(t_logits, logits),
            "cka_teacher_student": linear_cka(t_emb[:n], emb[:n]),
        })
    return out, logits
