"""Single runs: train a teacher, distil a student, evaluate a checkpoint.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per epoch),
``checkpoints/`` (``last.pt``, ``best.pt``, ``epoch_XXX.pt``), ``test_logits.npy`` / ``test_labels.npy`` and,
once finished, ``summary.json`` (and, once a figure asked for them, ``train_true_prob.npz``: see
:func:`train_true_label_prob`).  A finished run is never trained again; an unfinished one continues with ``resume``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdlab.data import DataBundle
from kdlab.engine.trainer import FitResult
from kdlab.models import count_parameters
from kdlab.runs.diagnostics import diagnose


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    reused: bool = False  # True when the run had already finished


def run_summary(kind: str, cfg: Any, model: nn.Module, fitres: FitResult, data: DataBundle, device: torch.device,
             teacher: nn.Module | None = None, teacher_test: tuple | None = None
             ) -> tuple[dict[str, Any], torch.Tensor]:
    measures, logits = diagnose(model, data, device, cfg.train.eval_batch_size, teacher, cfg.train.num_workers,
                                test=(fitres.test_logits, fitres.test_embeddings), teacher_test=teacher_test)
    return {
        "kind": kind, "dataset": cfg.data.name, "seed": cfg.seed, "epochs": cfg.train.epochs,
        **measures, "best_top1": fitres.best["test_top1"], "best_epoch": fitres.best["epoch"],
        "params": count_parameters(model), "train_time": round(fitres.train_time, 3),
    }, logits
