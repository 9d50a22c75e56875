"""A run folder: :class:`RunFolder` names every file a run writes, and this module reads, checks and locks them.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per epoch),
``checkpoints/`` (``last.pt``, ``prev.pt``, ``best.pt``, ``epoch_XXX.pt``), ``test_logits.npy`` / ``test_labels.npy``
and, once finished, ``summary.json`` and ``checksums.json`` (the SHA-256 of each result file, of ``config.yaml`` and
of each checkpoint: what :mod:`kdlab.runs.reuse` verifies before anything reuses the run); a group member that
failed leaves ``error.txt``; once a
figure asked for them, ``train_true_prob.npz``.  A finished run is never trained again; an unfinished one continues
with ``resume``.  Nothing outside this module spells these names.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from kdlab.config import DistillRunConfig, TeacherRunConfig, load_config
from kdlab.config.schema import flagged_keys
from kdlab.core import distributed
from kdlab.core.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    checkpoint_file,
    epoch_checkpoint_files,
    epoch_checkpoint_name,
    load_metadata,
)
from kdlab.core.errors import CheckpointError, ConfigError, RunFolderError
from kdlab.core.locks import run_lock
from kdlab.data import DataBundle

CONFIG = "config.yaml"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
TEST_LOGITS = "test_logits.npy"
TEST_LABELS = "test_labels.npy"
MANIFEST = "checksums.json"
ERROR = "error.txt"
TRAIN_PREDICTIONS = "train_true_prob.npz"
RESULT_FILES = (SUMMARY, TEST_LOGITS, TEST_LABELS, METRICS)  # checksummed once the run has finished


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    config_file = property(lambda self: self.path / CONFIG)
    summary_file = property(lambda self: self.path / SUMMARY)
    metrics_file = property(lambda self: self.path / METRICS)
    test_logits_file = property(lambda self: self.path / TEST_LOGITS)
    test_labels_file = property(lambda self: self.path / TEST_LABELS)
    manifest_file = property(lambda self: self.path / MANIFEST)
    error_file = property(lambda self: self.path / ERROR)
    train_predictions_file = property(lambda self: self.path / TRAIN_PREDICTIONS)
    tensorboard_dir = property(lambda self: self.path / "tensorboard")
    checkpoint_dir = property(lambda self: self.path / "checkpoints")

    def checkpoint(self, name: str) -> Path:
        """``last``, ``prev``, ``best`` or ``epoch_XXX`` -> its file."""
        return checkpoint_file(self.checkpoint_dir, name)

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoint(epoch_checkpoint_name(epoch))

    def epoch_checkpoints(self) -> dict[int, Path]:
        """Epoch -> ``epoch_XXX.pt`` file, of the checkpoints kept every ``train.save_every`` epochs."""
        return epoch_checkpoint_files(self.checkpoint_dir)

    @property
    def staging_file(self) -> Path:  # not *.pt: never listed as a checkpoint
        return self.checkpoint_dir / ".next.ckpt"

    def is_finished(self) -> bool:
        return self.summary_file.is_file()

    def has_run(self) -> bool:
        return self.config_file.is_file()

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary_file.read_text())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_file, summary)

    def lock(self, wait: bool = True):
        return run_lock(self.path, wait=wait)



# settings that do not change what a run computes, and so may differ when a run is resumed (declared on the config)
VOLATILE_KEYS = flagged_keys(TeacherRunConfig, "volatile") | flagged_keys(DistillRunConfig, "volatile")


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
    cfg_path = RunFolder(run_dir).config_file
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


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed process left behind (up to a checkpoint's size each).  Called under the run's
    lock, so no live writer owns them."""
    for folder in (run_dir, RunFolder(run_dir).checkpoint_dir):
        if folder.is_dir():
            for f in [*folder.glob(".*.tmp"), *folder.glob(RunFolder(run_dir).staging_file.name)]:
                f.unlink(missing_ok=True)


def remove_run(run_dir: Path) -> None:
    """Delete a run folder to train it anew, refusing a folder that is not a kdlab run (nothing else is lost)."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir() or (any(run_dir.iterdir()) and not (RunFolder(run_dir).config_file).is_file()
                                and not RunFolder(run_dir).checkpoint_dir.is_dir()):
        raise RunFolderError(f"overwrite: {run_dir} is not a kdlab run folder; not deleting it")
    with run_lock(run_dir, wait=False):
        shutil.rmtree(run_dir)


def exclusive(run_dir: Path):
    """The run folder's lock; in a torchrun job rank 0 holds it for all the job's processes."""
    return run_lock(run_dir) if distributed.env().main else contextlib.nullcontext()


def _save_array(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def save_predictions(run_dir: Path, logits: torch.Tensor, data: DataBundle) -> None:
    """Test-set logits and labels, so tables and figures (deviation, reliability) need no model or data set."""
    _save_array(RunFolder(run_dir).test_logits_file, logits.numpy().astype(np.float32))
    _save_array(RunFolder(run_dir).test_labels_file, data.test.y.cpu().numpy().astype(np.int64))


def check_checkpoint_owner(run_dir: Path, file: Path) -> None:
    """A checkpoint in a run folder must be that run's, and as it was when the run finished: one copied over
    from another run (another seed, say) or damaged since would be evaluated or distilled from under this run's
    name."""
    _check_owner(run_dir, file)
    try:
        sums = read_manifest(run_dir) or {}
    except ValueError:
        sums = {}
    if file.parent == RunFolder(run_dir).checkpoint_dir and mismatched(run_dir, sums, [checkpoint_key(file)]):
        raise CheckpointError(f"{file} no longer matches the checksum its run wrote when it finished (damaged or "
                              "replaced); restore it, or train the run anew")


def _check_owner(run_dir: Path, file: Path) -> None:
    try:
        own = yaml.safe_load((RunFolder(run_dir).config_file).read_text())
        saved = load_metadata(file).get("config")
    except (OSError, yaml.YAMLError, UnicodeDecodeError, CheckpointError):
        return  # no config to compare with, or a damaged file that loading reports itself
    if not isinstance(own, dict) or not isinstance(saved, dict):
        return
    diff = checkpoint_config_differences(saved, own)
    if diff:
        raise CheckpointError(f"{file} belongs to another run than {run_dir} ({diff[0]}); restore the run's own "
                              "checkpoint")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_key(file: Path) -> str:
    """A checkpoint's name in ``checksums.json``: its path inside the run folder (``checkpoints/last.pt``)."""
    return f"{file.parent.name}/{file.name}"


def write_manifest(run_dir: Path) -> None:
    """Record the checksums of the run's result files, its config.yaml (what binds them to this run) and its
    checkpoints (what students and RCO read): the last file a finishing run writes."""
    folder = RunFolder(run_dir)
    files = [run_dir / name for name in (*RESULT_FILES, CONFIG)]
    files += sorted(folder.checkpoint_dir.glob("*.pt")) if folder.checkpoint_dir.is_dir() else []
    sums = {f.name if f.parent == run_dir else checkpoint_key(f): sha256_file(f) for f in files if f.is_file()}
    atomic_write_json(folder.manifest_file, {"sha256": sums})


def read_manifest(run_dir: Path) -> dict[str, str] | None:
    """File -> SHA-256 from ``checksums.json``; None without one; raises ValueError when it is unreadable."""
    path = RunFolder(run_dir).manifest_file
    if not path.is_file():
        return None
    try:
        sums = json.loads(path.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{MANIFEST} is unreadable") from None
    if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
        raise ValueError(f"{MANIFEST} is unreadable")
    return sums


def mismatched(run_dir: Path, sums: dict[str, str], names) -> list[str]:
    """The files among ``names`` (paths inside the run folder) that ``sums`` lists and that no longer match it
    (missing ones included)."""
    bad = []
    for name in names:
        if name not in sums:
            continue
        try:
            if sha256_file(run_dir / name) != sums[name]:
                bad.append(name)
        except OSError:
            bad.append(name)
    return bad


def damaged_files(run_dir: Path, names: tuple[str, ...] = RESULT_FILES) -> list[str]:
    """The result files among ``names`` that do not match the run's checksums (missing ones included), or
    ``checksums.json`` itself when it is missing or unreadable: results without checksums are never trusted."""
    try:
        sums = read_manifest(run_dir)
    except ValueError:
        return [MANIFEST]
    if sums is None:
        return [MANIFEST]
    return mismatched(run_dir, sums, names)


def discard_results(run_dir: Path) -> None:
    """Remove the result files and checksums, so that the run finishes again from its final checkpoint."""
    for name in (*RESULT_FILES[:-1], MANIFEST):  # metrics.jsonl is rewritten from the checkpoint on resume
        (run_dir / name).unlink(missing_ok=True)
