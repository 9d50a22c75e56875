"""Single runs: train a teacher, distil a student, evaluate a checkpoint.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per epoch),
``checkpoints/`` (``last.pt``, ``best.pt``, ``epoch_XXX.pt``), ``test_logits.npy`` / ``test_labels.npy`` and,
once finished, ``summary.json`` (and, once a figure asked for them, ``train_true_prob.npz``: see
:func:`train_true_label_prob`).  A finished run is never trained again; an unfinished one continues with ``resume``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml

from . import log
from .config import DistillRunConfig, EvalConfig, TeacherRef, TeacherRunConfig, dump_yaml, load_config
from .data import DataBundle, DatasetSplit, Split, load_dataset
from .data.base import evaluation_view, fingerprint, hold_out
from .diagnostics import diagnose
from .engine import distributed
from .engine.checkpoint import atomic_write_bytes, atomic_write_json, atomic_write_text, load_metadata, load_weights
from .engine.device import resolve_device, seed_everything, set_deterministic
from .engine.locks import run_lock
from .engine.manifest import damaged_files, discard_results, write_manifest
from .engine.predict import predict
from .engine.trainer import FitResult, check_precision, checkpoint_dir, fit
from .errors import CheckpointError, ConfigError, RunFolderError
from .methods import build_teacher_objective
from .models import build_model, count_parameters

# settings that do not change what a run computes, and so may differ when a run is resumed
VOLATILE_KEYS = {"out_dir", "train.progress", "train.device", "train.tensorboard", "train.tensorboard_every_step",
                 "train.eval_batch_size"}


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    reused: bool = False  # True when the run had already finished


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _teacher_relative_to_run(flat: dict[str, Any]) -> dict[str, Any]:
    # a teacher in the same tree as the run (a study folder) moves or is copied with it: compare where it is
    # relative to the run folder, not where the tree happens to be
    t, out = flat.get("teacher.path"), flat.get("out_dir")
    if isinstance(t, str) and isinstance(out, str):
        flat["teacher.path"] = os.path.relpath(os.path.abspath(t), os.path.abspath(out))
    return flat


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _teacher_relative_to_run(_flatten(old)), _teacher_relative_to_run(_flatten(new))
    keys = sorted((set(a) | set(b)) - VOLATILE_KEYS)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def checkpoint_config_differences(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """How the config a checkpoint was written with differs from a run's (both as this version resolves them)."""
    return config_differences(_as_resolved_now(saved), _as_resolved_now(config))


def settings_differences(run_dir: Path, plain_cfg: dict[str, Any]) -> list[str] | None:
    """How the run in ``run_dir`` was configured differently from ``plain_cfg`` (None: no run there yet)."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        return None
    try:
        old = yaml.safe_load(cfg_path.read_text()) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError, RecursionError):
        raise RunFolderError(f"{cfg_path} is damaged (unreadable); move the folder away or choose another out_dir") \
            from None
    if not isinstance(old, dict) or not old:
        raise RunFolderError(f"{cfg_path} is empty or damaged (not a run's config); move the folder away or choose "
                             "another out_dir")
    return config_differences(_as_resolved_now(old), plain_cfg)


def _as_resolved_now(old: dict[str, Any]) -> dict[str, Any]:
    """A run's saved config as this version resolves it (a default it now writes out, e.g. a method's beta,
    is not a change of settings); unchanged when it no longer validates."""
    schema = DistillRunConfig if "student" in old else TeacherRunConfig
    try:
        return load_config(schema, old).model_dump(mode="json")
    except ConfigError:
        return old


def check_run_dir(run_dir: Path, plain_cfg: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """Check, without writing, that ``run_dir`` may be used for this config; return the finished summary if
    there is one."""
    summary_path = run_dir / "summary.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"out_dir {run_dir} is a file, not a folder; choose another out_dir")
    diff = settings_differences(run_dir, plain_cfg)
    if diff is not None:
        finished = summary_path.exists()
        state = "finished" if finished else "unfinished"
        if not resume:
            hint = ("pass --resume (resume=True in Python) to " + ("reuse" if finished else "continue")
                    + " it, --overwrite (overwrite=True) to train it anew,")
            raise RunFolderError(f"{run_dir} already holds a{'n' if not finished else ''} {state} run; "
                                 f"{hint} or choose another out_dir")
        if diff:
            more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
            raise RunFolderError(f"{run_dir} holds a run with different settings ({diff[0]}{more}); "
                                 "choose another out_dir")
        if finished:
            bad = damaged_files(run_dir)
            if not bad:
                return json.loads(summary_path.read_text())
            ck = checkpoint_dir(run_dir)
            if not ((ck / "last.pt").exists() or (ck / "prev.pt").exists()):
                raise RunFolderError(f"{run_dir}: {', '.join(bad)} no longer match{'es' if len(bad) == 1 else ''} "
                                     "the run's checksums (edited or damaged) and the run has no checkpoint to "
                                     "recompute from; delete the folder to train the run anew")
            return None  # finished again from its final checkpoint (see _check_and_init)
    elif (checkpoint_dir(run_dir) / "last.pt").exists():
        raise RunFolderError(f"{run_dir} has checkpoints but no config.yaml; move it away or choose another out_dir")
    return None


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed process left behind (up to a checkpoint's size each).  Called under the run's
    lock, so no live writer owns them."""
    for folder in (run_dir, checkpoint_dir(run_dir)):
        if folder.is_dir():
            for f in [*folder.glob(".*.tmp"), *folder.glob(".next.ckpt")]:
                f.unlink(missing_ok=True)


def remove_run(run_dir: Path) -> None:
    """Delete a run folder to train it anew, refusing a folder that is not a kdlab run (nothing else is lost)."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir() or (any(run_dir.iterdir()) and not (run_dir / "config.yaml").is_file()
                                and not checkpoint_dir(run_dir).is_dir()):
        raise RunFolderError(f"overwrite: {run_dir} is not a kdlab run folder; not deleting it")
    with run_lock(run_dir, wait=False):
        shutil.rmtree(run_dir)


def _check_and_init(run_dir: Path, plain_cfg: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """Under the run's lock, once everything is validated (a run that cannot start leaves no folder behind):
    the finished summary if another process completed the run meanwhile, else the folder made ready."""
    done = check_run_dir(run_dir, plain_cfg, resume)
    if done is None:
        remove_stale_temporaries(run_dir)
    if done is None and (run_dir / "summary.json").exists():
        bad = damaged_files(run_dir)
        if bad:
            log.warning(f"kdlab: {run_dir}: {', '.join(bad)} no longer match{'es' if len(bad) == 1 else ''} the "
                        "run's checksums (edited or damaged); recomputing the results from its final checkpoint")
            discard_results(run_dir)
    if done is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(plain_cfg))
    return done


def _exclusive(run_dir: Path):
    """The run folder's lock; in a torchrun job rank 0 holds it for all the job's processes."""
    return run_lock(run_dir) if distributed.env().main else contextlib.nullcontext()


def _save_array(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def _save_predictions(run_dir: Path, logits: torch.Tensor, data: DataBundle) -> None:
    """Test-set logits and labels, so tables and figures (deviation, reliability) need no model or data set."""
    _save_array(run_dir / "test_logits.npy", logits.numpy().astype(np.float32))
    _save_array(run_dir / "test_labels.npy", data.test.y.cpu().numpy().astype(np.int64))


def _summary(kind: str, cfg: Any, model: nn.Module, fitres: FitResult, data: DataBundle, device: torch.device,
             teacher: nn.Module | None = None, teacher_test: tuple | None = None
             ) -> tuple[dict[str, Any], torch.Tensor]:
    measures, logits = diagnose(model, data, device, cfg.train.eval_batch_size, teacher, cfg.train.num_workers,
                                test=(fitres.test_logits, fitres.test_embeddings), teacher_test=teacher_test)
    return {
        "kind": kind, "dataset": cfg.data.name, "seed": cfg.seed, "epochs": cfg.train.epochs,
        **measures, "best_top1": fitres.best["test_top1"], "best_epoch": fitres.best["epoch"],
        "params": count_parameters(model), "train_time": round(fitres.train_time, 3),
    }, logits


def _with_seed(path: str | None, seed: int) -> str | None:
    """``{seed}`` in a path stands for the run's seed (one config file serves every seed)."""
    return path.replace("{seed}", str(seed)) if path else path


def default_out_dir(kind: str, model: str, method: str, seed: int) -> str:
    return str(Path("runs") / f"{kind}-{model}-{method}-s{seed}")


def train_teacher(config: Any, overrides: list[str] = (), resume: bool = False, hooks=(),
                  overwrite: bool = False) -> RunResult:
    """Train a teacher as the config says; returns its run folder and summary.

    A folder that already holds a run is an error unless ``resume`` (reuse it if finished with the same
    settings, continue it if interrupted) or ``overwrite`` (delete it and train anew)."""
    cfg = load_config(TeacherRunConfig, config, overrides)
    out_dir = _with_seed(cfg.out_dir, cfg.seed) or default_out_dir("teacher", cfg.model.name, cfg.method.name,
                                                                    cfg.seed)
    cfg = cfg.model_copy(update={"out_dir": out_dir})
    run_dir = Path(out_dir)
    plain = cfg.model_dump(mode="json")
    if overwrite:
        distributed.on_main(lambda: remove_run(run_dir))
    set_deterministic(cfg.train.deterministic)  # before any CUDA work (the cuBLAS workspace setting)
    check_precision(distributed.process_device(resolve_device(cfg.train.device)), cfg.train.precision)
    done = distributed.on_main(lambda: check_run_dir(run_dir, plain, resume))
    if done is not None:
        return RunResult(run_dir, done, reused=True)
    # build everything before touching the run folder: a run that cannot start leaves nothing behind
    data = load_dataset(cfg.data, cfg.holdout)
    seed_everything(cfg.seed)
    model = build_model(cfg.model.name, cfg.model.params, data.num_classes, data.input_shape)
    objective = build_teacher_objective(cfg.method, model, data, run_dir, cfg.train.epochs)
    with _exclusive(run_dir):
        done = distributed.on_main(lambda: _check_and_init(run_dir, plain, resume))
        if done is not None:  # another process finished it meanwhile
            return RunResult(run_dir, done, reused=True)
        return _train_teacher(cfg, run_dir, plain, data, model, objective, resume, hooks)


def _train_teacher(cfg: TeacherRunConfig, run_dir: Path, plain: dict, data: DataBundle, model: nn.Module,
                   objective, resume: bool, hooks) -> RunResult:
    res = fit(model, objective, data, optim=cfg.optim, schedule=cfg.schedule, train=cfg.train, seed=cfg.seed,
              run_dir=run_dir, resume=resume, meta={"kind": "teacher", "config": plain,
                                                   "data_fingerprint": fingerprint(data)}, hooks=hooks,
              desc=f"teacher {cfg.model.name}/{cfg.method.name} s{cfg.seed}")
    if not distributed.env().main:
        return RunResult(run_dir, {})
    summary, logits = _summary("teacher", cfg, model, res, data, resolve_device(cfg.train.device))
    summary.update({"model": cfg.model.name, "method": cfg.method.name})
    _save_predictions(run_dir, logits, data)
    atomic_write_json(run_dir / "summary.json", summary)
    write_manifest(run_dir)
    return RunResult(run_dir, summary)


def resolve_checkpoint(ref: TeacherRef | str, checkpoint: str = "last") -> Path:
    """A run folder + checkpoint name (last / best / epoch_XXX), or a checkpoint file, -> the file's path."""
    if isinstance(ref, TeacherRef):
        if ref.path is None:
            raise CheckpointError(f"teacher weights {ref.weights} are not a kdlab checkpoint")
        path, checkpoint = Path(ref.path), ref.checkpoint
    else:
        path = Path(ref)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"checkpoint or run folder not found: {path}")
    name = checkpoint if checkpoint.endswith(".pt") else f"{checkpoint}.pt"
    file = checkpoint_dir(path) / name
    if not file.exists():
        avail = sorted(p.stem for p in checkpoint_dir(path).glob("*.pt"))
        listing = ", ".join(avail) if avail else "none"
        raise CheckpointError(f"{path} has no checkpoint {checkpoint!r} (available: {listing})")
    check_checkpoint_owner(path, file)
    return file


def check_checkpoint_owner(run_dir: Path, file: Path) -> None:
    """A checkpoint in a run folder must be that run's: one copied over from another run (another seed, say)
    would be evaluated or distilled from under this run's name."""
    try:
        own = yaml.safe_load((run_dir / "config.yaml").read_text())
        saved = load_metadata(file).get("config")
    except (OSError, yaml.YAMLError, UnicodeDecodeError, CheckpointError):
        return  # no config to compare with, or a damaged file that loading reports itself
    if not isinstance(own, dict) or not isinstance(saved, dict):
        return
    diff = checkpoint_config_differences(saved, own)
    if diff:
        raise CheckpointError(f"{file} belongs to another run than {run_dir} ({diff[0]}); restore the run's own "
                              "checkpoint")


def load_model(path: Path, data: DataBundle | None, device: torch.device, role: str = "teacher"
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint and check it fits ``data``: built on the CPU from the checkpoint's
    weights and metadata only (its optimizer and objective state, a SoTeacher buffer, are never read), then moved
    to ``device``.  Returns the model and the checkpoint's weights and metadata."""
    ck = load_weights(path)
    spec = ck.get("model")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{path} does not describe its model (not written by kdlab?)")
    if data is not None:
        if spec["num_classes"] != data.num_classes:
            raise CheckpointError(f"{role} checkpoint {path} predicts {spec['num_classes']} classes but data set "
                                  f"{data.name!r} has {data.num_classes}")
        if tuple(spec["input_shape"]) != tuple(data.input_shape):
            raise CheckpointError(f"{role} checkpoint {path} takes inputs of shape {tuple(spec['input_shape'])} "
                                  f"but data set {data.name!r} has {tuple(data.input_shape)}")
    params = dict(spec.get("params", {}))
    if params.get("weights"):  # pretrained weights the model started from: the checkpoint's own state replaces them
        params["weights"] = None
    try:
        model = build_model(spec["name"], params, spec["num_classes"], tuple(spec["input_shape"]))
    except ConfigError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    try:
        model.load_state_dict(ck["model_state"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "state mismatch"
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), "")
        raise CheckpointError(f"checkpoint {path} does not match model {spec['name']!r}: "
                              f"{first} {detail}".strip()) from None
    model.to(device).eval()
    return model, ck


def load_teacher(ref: TeacherRef, data: DataBundle, device: torch.device) -> tuple[nn.Module, Path]:
    """The frozen teacher of ``ref`` on ``device`` and the file its weights came from."""
    if ref.weights is not None:
        model, path = pretrained_teacher(ref, data), Path(ref.weights)
        model.to(device).eval()
    else:
        path = resolve_checkpoint(ref)
        model, _ = load_model(path, data, device, role="teacher")
    model.requires_grad_(False)
    return model, path


def pretrained_teacher(ref: TeacherRef, data: DataBundle) -> nn.Module:
    """A teacher kdlab did not train: ``ref.model`` built for ``data``, its weights from the file ``ref.weights``
    (in the key names of the model's own code, or kdlab's)."""
    from .models._weights import load_pretrained

    model = build_model(ref.model.name, ref.model.params, data.num_classes, data.input_shape, key="teacher.model")
    detail = ref.model.get("arch") or ref.model.get("target")
    load_pretrained(model, ref.weights, f"teacher {ref.model.name}" + (f" {detail!r}" if detail else ""))
    return model


TRAIN_PREDICTIONS = "train_true_prob.npz"


def trained_points(data: DataBundle, holdout: float) -> Split | DatasetSplit:
    """The training points of a run on ``data`` with ``holdout``, read the way the test split is (no random
    augmentation).  The run's hold-out (it depends on the labels only) is taken out of the evaluation view, rather
    than the view made of the training split the hold-out leaves: that subset of a file data set can no longer be
    given the test transform."""
    return hold_out(replace(data, train=evaluation_view(data.train, data.test)), holdout).train


def train_true_label_prob(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, str]:
    """(probability of the true label, true label, the points' key) for every point a finished run trained on: its
    training split after its hold-out, read as the test split is (no augmentation), predicted in evaluation mode
    by ``last.pt`` (the model whose test predictions the run saved).  Two runs with the same key trained on the
    same points in the same order.  Computed once, then read from ``<run_dir>/train_true_prob.npz`` (a finished
    run is never trained again, so the file stays true)."""
    run_dir = Path(run_dir)
    cache = run_dir / TRAIN_PREDICTIONS
    if cache.is_file():
        with np.load(cache) as f:
            return f["p_true"], f["labels"], str(f["points"])
    path = resolve_checkpoint(str(run_dir))
    ck_cfg = load_metadata(path).get("config") or {}
    if "data" not in ck_cfg:
        raise CheckpointError(f"{path} does not record its data set; cannot rebuild its training points")
    cfg = load_config(EvalConfig, {"path": str(run_dir), "data": ck_cfg["data"],
                                   "holdout": ck_cfg.get("holdout", 0.0)})
    full = load_dataset(cfg.data)
    train = trained_points(full, cfg.holdout)
    device = resolve_device("auto")
    model, _ = load_model(path, full, device, role="evaluated")
    batch = (ck_cfg.get("train") or {}).get("eval_batch_size", 512)
    logits = predict(model, full.eval_loader(train, batch, device))
    labels = train.y.cpu().long()
    p_true = torch.softmax(logits.double(), 1).gather(1, labels[:, None]).flatten().numpy()
    points = json.dumps({"data": cfg.data.model_dump(), "holdout": cfg.holdout}, sort_keys=True)
    buf = io.BytesIO()
    np.savez(buf, p_true=p_true, labels=labels.numpy(), points=np.array(points))
    atomic_write_bytes(cache, buf.getvalue())  # a concurrent report sees no file or the whole file
    return p_true, labels.numpy(), points


def distill(config: Any, overrides: list[str] = (), resume: bool = False, hooks=(),
            overwrite: bool = False) -> RunResult:
    """Train a student (distilled from a teacher unless the method is ``none``); returns folder and summary.
    ``resume`` and ``overwrite`` as for :func:`train_teacher`."""
    from .student_runs import distill as run

    return run(config, overrides, resume, hooks, overwrite=overwrite)


def distill_group(configs: list[Any], resume: bool = False, hooks=()) -> list:
    """Train student runs of one teacher together (see :func:`kdlab.student_runs.distill_group`)."""
    from .student_runs import distill_group as run

    return run(configs, resume, hooks)


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
    data = load_dataset(data_spec, holdout)
    model, ck = load_model(path, data, device, role="evaluated")
    teacher = load_teacher(cfg.teacher, data, device)[0] if cfg.teacher is not None else None
    measures, _ = diagnose(model, data, device, cfg.batch_size, teacher)
    return {"checkpoint": str(path), "dataset": data.name, "model": ck["model"]["name"], "epoch": ck.get("epoch"),
            **measures}
