"""``kdlab train-teacher``: train one teacher into its run folder (:class:`~kdlab.runs.folder.RunFolder`).

A finished run with the same settings is reused (``resume``), an interrupted one continues from its last
checkpoint; ``overwrite`` deletes the folder and trains anew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from kdlab.config import TeacherRunConfig
from kdlab.core import distributed
from kdlab.core.device import resolve_device, seed_everything, set_deterministic
from kdlab.data import DataBundle, load_dataset
from kdlab.data.base import fingerprint
from kdlab.engine.trainer import check_precision, fit
from kdlab.methods import build_teacher_objective
from kdlab.models import build_model
from kdlab.runs.checkpoints import RunCheckpoints
from kdlab.runs.folder import (
    RunFolder,
    exclusive,
    remove_run,
    save_predictions,
)
from kdlab.runs.resolve import load_init, resolve_checkpoint, resolve_teacher_run
from kdlab.runs.reuse import check_and_init, check_run_dir, vouch
from kdlab.runs.summary import RunResult, run_summary


def train_teacher(config: Any, overrides: list[str] = (), resume: bool = False, hooks=(),
                  overwrite: bool = False) -> RunResult:
    """Train a teacher as the config says; returns its run folder and summary.

    A folder that already holds a run is an error unless ``resume`` (reuse it if finished with the same
    settings, continue it if interrupted) or ``overwrite`` (delete it and train anew)."""
    run = resolve_teacher_run(config, overrides)
    cfg, run_dir, plain = run.cfg, run.run_dir, run.plain
    if overwrite:
        distributed.on_main(lambda: remove_run(run_dir))
    set_deterministic(cfg.train.deterministic)  # before any CUDA work (the cuBLAS workspace setting)
    check_precision(distributed.process_device(resolve_device(cfg.train.device)), cfg.train.precision)
    done = distributed.on_main(lambda: check_run_dir(run_dir, plain, resume))
    if done is not None:
        return RunResult(run_dir, done, reused=True)
    # build everything before touching the run folder: a run that cannot start leaves nothing behind
    data = load_dataset(cfg.data, cfg.holdout, cfg.seed)
    seed_everything(cfg.seed)
    model = build_model(cfg.model.name, cfg.model.params, data.num_classes, data.input_shape)
    load_init(model, cfg, "teacher")
    objective = build_teacher_objective(cfg.method, model, data, run_dir, cfg.train.epochs,
                                        checkpoint_file=resolve_checkpoint)
    with exclusive(run_dir):
        done = distributed.on_main(lambda: check_and_init(run_dir, plain, resume))
        if done is not None:  # another process finished it meanwhile
            return RunResult(run_dir, done, reused=True)
        return _train_teacher(cfg, run_dir, plain, data, model, objective, resume, hooks)


def _train_teacher(cfg: TeacherRunConfig, run_dir: Path, plain: dict, data: DataBundle, model: nn.Module,
                   objective, resume: bool, hooks) -> RunResult:
    res = fit(model, objective, data, optim=cfg.optim, schedule=cfg.schedule, train=cfg.train, seed=cfg.seed,
              store=RunCheckpoints(run_dir), resume=resume, meta={"kind": "teacher", "config": plain,
                                                   "data_fingerprint": fingerprint(data)}, hooks=hooks,
              desc=f"teacher {cfg.model.name}/{cfg.method.name} s{cfg.seed}")
    if not distributed.env().main:
        return RunResult(run_dir, {})
    summary, logits = run_summary("teacher", cfg, model, res, data, resolve_device(cfg.train.device),
                                  model=cfg.model.name, method=cfg.method.name)
    save_predictions(run_dir, logits, data)
    RunFolder(run_dir).write_summary(summary)
    vouch(run_dir, plain)
    return RunResult(run_dir, summary)
