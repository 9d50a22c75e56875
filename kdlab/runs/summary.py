"""A finished run's summary (``summary.json``), typed: :class:`RunSummary` declares every key once, and its fields'
metadata make the study's metric columns (``results.csv``), its timing columns (``timings.csv``) and the keys the
command line prints after a run."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdlab.core.checkpoint import checkpoint_file, load_metadata
from kdlab.core.errors import CheckpointError, KdlabError
from kdlab.data import DataBundle
from kdlab.engine.trainer import FitResult
from kdlab.models import count_parameters
from kdlab.runs.diagnostics import diagnose


def _key(doc: str, column: bool = False, printed: bool = False, timing: bool = False) -> Any:
    """A summary key: ``column`` a metric column of results.csv, ``printed`` shown after a run, ``timing`` a
    column of timings.csv (how the run was scheduled, which differs from one execution to the next)."""
    return field(default=None, metadata={"doc": doc, "column": column, "printed": printed, "timing": timing})


@dataclass(frozen=True)
class RunSummary:
    """Every key a run's summary may hold (None: not measured for this run), in results.csv's column order."""

    kind: str | None = _key("teacher | student")
    dataset: str | None = _key("the data set's name")
    seed: int | None = _key("the run's seed")
    epochs: int | None = _key("training epochs")
    top1: float | None = _key("test top-1 % of the final model", column=True, printed=True)
    top5: float | None = _key("test top-5 %", column=True, printed=True)
    nll: float | None = _key("test negative log-likelihood", column=True, printed=True)
    ece: float | None = _key("test expected calibration error", column=True, printed=True)
    nll_ts: float | None = _key("test NLL after temperature scaling, the temperature fitted on the held-out split "
                                "(holdout), or on the validation split (data.val_fraction) without one", column=True)
    ece_ts: float | None = _key("test ECE after temperature scaling", column=True)
    temperature: float | None = _key("the fitted temperature", column=True)
    best_top1: float | None = _key("test top-1 % at best_epoch (reported, not selected on, when selected_on is val)",
                                   column=True, printed=True)
    best_epoch: int | None = _key("the selected epoch (best.pt): the highest top-1 on the selected_on split",
                                  column=True)
    val_top1: float | None = _key("validation top-1 % of the final model (data.val_fraction)", column=True,
                                  printed=True)
    selected_on: str | None = _key("the split best_epoch was chosen on: val (with data.val_fraction) or test",
                                   column=True)
    teacher_top1: float | None = _key("the teacher's test top-1 %", column=True, printed=True)
    teacher_nll: float | None = _key("the teacher's test NLL", column=True)
    teacher_ece: float | None = _key("the teacher's test ECE", column=True)
    teacher_pstar_l1_train: float | None = _key("the teacher's L1 distance to the true p* (train)", column=True)
    teacher_pstar_l1_test: float | None = _key("the teacher's L1 distance to the true p* (test)", column=True)
    agreement: float | None = _key("test top-1 agreement of student and teacher", column=True, printed=True)
    kl_teacher_student: float | None = _key("test KL(teacher || student)", column=True, printed=True)
    cka_teacher_student: float | None = _key("linear CKA of the embeddings", column=True, printed=True)
    pstar_l1_train: float | None = _key("L1 distance to the true p* (train)", column=True, printed=True)
    pstar_l1_test: float | None = _key("L1 distance to the true p* (test)", column=True, printed=True)
    params: int | None = _key("parameters of the model", column=True)
    train_time: float | None = _key("seconds of training (a group member: its share)", printed=True, timing=True)
    model: str | None = _key("the model's name")
    method: str | None = _key("the method's name")
    group_size: int | None = _key("students trained together with it", timing=True)
    teacher_path: str | None = _key("the teacher checkpoint it was distilled from")
    teacher_selected_on: str | None = _key("the split that chose the teacher checkpoint when it is its run's best "
                                           "epoch (teacher.checkpoint: best): val or test")

    @classmethod
    def keys(cls, flag: str) -> list[str]:
        """The keys whose declaration sets ``flag`` (column, printed or timing), in order."""
        return [f.name for f in fields(cls) if f.metadata[flag]]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunSummary:
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise KdlabError(f"run summary: unknown key(s) {', '.join(unknown)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        """The summary as ``summary.json`` holds it: the measured keys only."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    reused: bool = False  # True when the run had already finished


def run_summary(kind: str, cfg: Any, net: nn.Module, fitres: FitResult, data: DataBundle, device: torch.device,
                teacher: nn.Module | None = None, teacher_test: tuple | None = None, **more: Any
                ) -> tuple[dict[str, Any], torch.Tensor]:
    """The summary of a run that trained ``net`` (``more``: its other keys, e.g. model and method) and its test
    logits."""
    measures, logits = diagnose(net, data, device, cfg.train.eval_batch_size, teacher, cfg.train.num_workers,
                                test=(fitres.test_logits, fitres.test_embeddings), teacher_test=teacher_test)
    final = fitres.history[-1] if fitres.history else {}
    summary = RunSummary.from_dict({
        "kind": kind, "dataset": cfg.data.name, "seed": cfg.seed, "epochs": cfg.train.epochs,
        **measures, "best_top1": fitres.best["test_top1"], "best_epoch": fitres.best["epoch"],
        "val_top1": final.get("val_top1"), "selected_on": fitres.best.get("selected_on", "test"),
        "params": count_parameters(net), "train_time": round(fitres.train_time, 3),
        "teacher_selected_on": checkpoint_selected_on(more.get("teacher_path")), **more,
    })
    return summary.to_dict(), logits


def checkpoint_selected_on(path: str | Path | None) -> str | None:
    """For a run's ``best.pt``, the split its epoch was chosen on (``val`` or ``test``; a checkpoint written
    before kdlab recorded it: ``test``); None for any other file (a last or epoch checkpoint is chosen by its
    epoch, a weights file by whoever made it)."""
    if path is None or Path(path).name != checkpoint_file(Path(), "best").name:
        return None
    try:
        best = load_metadata(path).get("best")
    except CheckpointError:
        return None
    return best.get("selected_on", "test") if isinstance(best, dict) else None
