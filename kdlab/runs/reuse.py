"""Whether a run folder may take a planned run, and whether the finished run in it may be reused.

A finished run is reused only once it is proven to be the planned run, intact:

- its ``config.yaml`` has the planned run's settings (the volatile ones aside);
- ``checksums.json`` was written for this ``config.yaml``, and the results and checkpoints still match it;
- its summary's kind, seed, data set, epochs, model and method are the config's;
- each checkpoint the checksums do not cover (a run finished by an earlier kdlab, or checksums that are not this
  run's) was written with this config, and its weights and metadata pass their own checksums.

Results that fail (edited, damaged, another run's, or without checksums: then nothing proves them) are recomputed
from the run's final checkpoint, and a warning names them.  A checkpoint that fails (damaged, missing, another
run's) is refused by name: students and RCO load a run's checkpoints, and only training the run anew remakes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdlab.config import dump_yaml
from kdlab.core import log
from kdlab.core.checkpoint import atomic_write_text, load_metadata, load_weights
from kdlab.core.errors import CheckpointError, RunFolderError
from kdlab.runs.folder import (
    CONFIG,
    MANIFEST,
    RESULT_FILES,
    RunFolder,
    checkpoint_config_differences,
    checkpoint_key,
    damaged_files,
    discard_results,
    mismatched,
    read_manifest,
    remove_stale_temporaries,
    settings_differences,
    write_manifest,
)


def summary_differences(summary: dict[str, Any], plain: dict[str, Any]) -> list[str]:
    """How a summary's own record of its run (kind, seed, data set, epochs, model, method) differs from the
    run's config, as ``key: summary's -> config's``."""
    student = "student" in plain
    section = lambda key: plain.get(key) if isinstance(plain.get(key), dict) else {}  # noqa: E731
    expected = {"kind": "student" if student else "teacher", "seed": plain.get("seed"),
                "dataset": section("data").get("name"), "epochs": section("train").get("epochs"),
                "model": section("student" if student else "model").get("name"),
                "method": section("method").get("name")}
    return [f"{k}: {summary[k]!r} -> {v!r}" for k, v in expected.items() if k in summary and summary[k] != v]


def result_problems(run_dir: Path, plain: dict[str, Any]) -> list[str]:
    """Why the finished results in ``run_dir`` cannot be reused as the run ``plain`` describes (empty: they can)."""
    bad = damaged_files(run_dir, (CONFIG, *RESULT_FILES))
    if bad == [MANIFEST]:
        return [f"{MANIFEST} is missing or unreadable (nothing proves the results are this run's)"]
    if bad:
        return [f"{', '.join(bad)} no longer match{'es' if len(bad) == 1 else ''} the run's checksums (edited or "
                "damaged, or another run's)"]
    try:
        summary = json.loads(RunFolder(run_dir).summary_file.read_text())
    except (OSError, ValueError):
        return ["summary.json is unreadable"]
    if not isinstance(summary, dict):
        return ["summary.json is damaged (not a run summary)"]
    diff = summary_differences(summary, plain)
    return [f"summary.json belongs to another run ({diff[0]})"] if diff else []


def checkpoint_problems(run_dir: Path, plain: dict[str, Any]) -> list[str]:
    """Why the checkpoints of the finished run in ``run_dir`` are not the run's own, intact (empty: they are)."""
    folder = RunFolder(run_dir)
    try:
        sums = read_manifest(run_dir) or {}
    except ValueError:
        sums = {}
    # checksums written for another config.yaml (restored from another run) vouch for nothing
    trusted = CONFIG in sums and not mismatched(run_dir, sums, [CONFIG])
    prefix = folder.checkpoint_dir.name + "/"
    listed = sorted(k for k in sums if k.startswith(prefix)) if trusted else []
    out = [f"{k} is missing" if not (run_dir / k).exists() else f"{k} no longer matches the run's checksums "
           "(damaged or replaced)" for k in mismatched(run_dir, sums, listed)]
    files = sorted(folder.checkpoint_dir.glob("*.pt")) if folder.checkpoint_dir.is_dir() else []
    for f in files:
        if checkpoint_key(f) not in listed:
            out += _own_intact(f, plain)
    if not listed:
        out += [f"{checkpoint_key(f)} is missing" for f in _expected(folder, plain) if not f.exists()]
    last = checkpoint_key(folder.checkpoint("last"))
    return sorted(out, key=lambda p: (not p.startswith(last), p))  # the resume point first


def _expected(folder: RunFolder, plain: dict[str, Any]) -> list[Path]:
    """The checkpoints a finished run has written (checksums that would list them aside): ``last.pt``,
    ``best.pt`` once an epoch was tested with a finite top-1, and ``epoch_XXX.pt`` every ``save_every``."""
    train = plain.get("train") if isinstance(plain.get("train"), dict) else {}
    epochs, every = train.get("epochs"), train.get("save_every")
    out = [folder.checkpoint("last")]
    if isinstance(epochs, int) and isinstance(every, int) and every > 0:
        out += [folder.epoch_checkpoint(e) for e in range(every, epochs + 1, every)]
    try:
        best = load_metadata(out[0]).get("best")
    except CheckpointError:
        best = None  # the damaged last.pt is named already
    if isinstance(best, dict) and isinstance(best.get("epoch"), int) and best["epoch"] >= 1:
        out.append(folder.checkpoint("best"))
    return out


def _own_intact(file: Path, plain: dict[str, Any]) -> list[str]:
    key = checkpoint_key(file)
    try:
        saved = load_weights(file).get("config")  # the weights and metadata students read, verified
    except CheckpointError:
        return [f"{key} is damaged (its own checksums fail)"]
    diff = checkpoint_config_differences(saved, plain) if isinstance(saved, dict) else []
    return [f"{key} belongs to another run ({diff[0]})"] if diff else []


def _has_final_checkpoint(run_dir: Path) -> bool:
    folder = RunFolder(run_dir)
    return folder.checkpoint("last").exists() or folder.checkpoint("prev").exists()


def _reusable(run_dir: Path, plain: dict[str, Any]) -> dict[str, Any] | None:
    """The finished run's summary if it is proven to be this run, intact; None when its results must be
    recomputed from its final checkpoint; an error naming what is wrong otherwise."""
    results = result_problems(run_dir, plain)
    if results and not _has_final_checkpoint(run_dir):
        raise RunFolderError(f"{run_dir}: {results[0]} and the run has no checkpoint to recompute its results "
                             "from; delete the folder to train the run anew")
    checkpoints = checkpoint_problems(run_dir, plain)
    if checkpoints:
        more = f" (and {len(checkpoints) - 1} more)" if len(checkpoints) > 1 else ""
        raise RunFolderError(f"{run_dir}: {checkpoints[0]}{more}; students load a run's checkpoints and only "
                             "training it anew remakes them: restore the run's own files, or train it anew "
                             "(--overwrite, or delete the folder)")
    return None if results else RunFolder(run_dir).read_summary()


def check_run_dir(run_dir: Path, plain_cfg: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """Check, without writing, that ``run_dir`` may be used for this config; return the finished summary if
    there is one that is proven to be this run's."""
    folder = RunFolder(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"out_dir {run_dir} is a file, not a folder; choose another out_dir")
    diff = settings_differences(run_dir, plain_cfg)
    if diff is None:
        if folder.checkpoint("last").exists():
            raise RunFolderError(f"{run_dir} has checkpoints but no config.yaml; move it away or choose another "
                                 "out_dir")
        return None
    finished = folder.is_finished()
    if not resume:
        state = "finished" if finished else "unfinished"
        hint = ("pass --resume (resume=True in Python) to " + ("reuse" if finished else "continue")
                + " it, --overwrite (overwrite=True) to train it anew,")
        raise RunFolderError(f"{run_dir} already holds a{'n' if not finished else ''} {state} run; "
                             f"{hint} or choose another out_dir")
    if diff:
        more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
        raise RunFolderError(f"{run_dir} holds a run with different settings ({diff[0]}{more}); "
                             "choose another out_dir")
    return _reusable(run_dir, plain_cfg) if finished else None


def check_and_init(run_dir: Path, plain_cfg: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """Under the run's lock, once everything is validated (a run that cannot start leaves no folder behind):
    the finished summary if another process completed the run meanwhile, else the folder made ready (results
    that cannot be reused discarded, to be recomputed from the final checkpoint)."""
    done = check_run_dir(run_dir, plain_cfg, resume)
    if done is not None:
        return done
    remove_stale_temporaries(run_dir)
    if RunFolder(run_dir).is_finished():
        problems = result_problems(run_dir, plain_cfg)
        log.warning(f"kdlab: {run_dir}: {problems[0] if problems else 'its results cannot be reused'}; "
                    "recomputing the results from its final checkpoint")
        discard_results(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RunFolder(run_dir).config_file, dump_yaml(plain_cfg))
    return None


def vouch(run_dir: Path, plain: dict[str, Any]) -> None:
    """Finish a run: check that its checkpoints are its own and intact (a resumed run never rewrites ``best.pt``
    or an epoch's checkpoint, which may have been damaged or replaced meanwhile), then record the checksums that
    later reuse verifies.  Called once the summary is written; the checksums file is the last one."""
    problems = checkpoint_problems(run_dir, plain)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RunFolderError(f"{run_dir}: {problems[0]}{more}; the run trained, but its checkpoints cannot be "
                             "vouched for: restore the run's own files, or train it anew (--overwrite)")
    write_manifest(run_dir)
