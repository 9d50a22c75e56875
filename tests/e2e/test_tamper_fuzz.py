"""Finished runs tampered with at random (bytes flipped, files truncated, deleted, or restored from another seed's
run, results edited, checksums dropped), then reused as ``--resume`` and a study do.  Every outcome is the run's
own results and checkpoints (reused, or recomputed from its final checkpoint) or a one-line error naming the run;
never another run's results, edited ones or damaged checkpoints passed off as the run's, never a traceback.

Slow (kept out of CI: ``pytest -m slow tests/e2e/test_tamper_fuzz.py``); TAMPER_CASES and TAMPER_SEED set the
cases.
"""

import collections
import io
import json
import os
import random
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch

from kdlab.cli.main import main
from kdlab.core.checkpoint import load_weights
from kdlab.core.errors import CheckpointError
from kdlab.runs.folder import RESULT_FILES, RunFolder
from kdlab.runs.resolve import resolve_checkpoint
from kdlab.runs.summary import RunSummary

CASES = int(os.environ.get("TAMPER_CASES", "120"))
TINY = ["data.name=mixed-feature", "data.num_train=96", "data.num_test=48", "train.epochs=3", "train.batch_size=16",
        "train.progress=off", "schedule.milestones=[2]"]
TEACHER = ["train-teacher", *TINY, "model=resnet8"]
FILES = [*RESULT_FILES, "checksums.json", "checkpoints/last.pt", "checkpoints/prev.pt", "checkpoints/best.pt"]


def _teacher(out, seed):
    return [*TEACHER, f"out_dir={out}", f"seed={seed}"]


def _student(out, teacher):
    return ["distill", *TINY, "student=mlp", "method=kd", f"teacher.path={teacher}", f"out_dir={out}", "seed=0"]


def _run(args):
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def _results(run_dir):
    """What a study reports of a run: its metric columns and test logits (and, in :func:`_weights`, what its
    students load)."""
    folder = RunFolder(run_dir)
    summary = json.loads(folder.summary_file.read_text())
    return ({k: summary.get(k) for k in RunSummary.keys("column")}, np.load(folder.test_logits_file))


def _weights(run_dir):
    """The weights of each checkpoint students read, as what anything loading them gets (None: refused)."""
    out = {}
    for name in ("last", "best"):
        try:
            out[name] = load_weights(resolve_checkpoint(run_dir, name))["model_state"]
        except CheckpointError:
            out[name] = None
    return out


def _same_weights(a, b):
    return all(a[k] is not None and b[k] is not None and a[k].keys() == b[k].keys()
               and all(torch.equal(a[k][p], b[k][p]) for p in a[k]) for k in a)


def _restore_from(run_dir, other_dir):
    """A wrong backup restore: every file of another run but the config."""
    shutil.rmtree(run_dir / "checkpoints")
    shutil.copytree(other_dir / "checkpoints", run_dir / "checkpoints")
    for name in (*RESULT_FILES, "checksums.json"):
        shutil.copy2(other_dir / name, run_dir / name)


def _tamper(rng, run_dir, other_dir):
    """One random change to a finished run, as a fault or a wrong restore would make; returns what it did."""
    if rng.random() < 0.1:
        _restore_from(run_dir, other_dir)
        return "all but config.yaml: other run's"
    name = rng.choice(FILES)
    f, theirs = run_dir / name, other_dir / name
    how = rng.choice(["flip", "truncate", "delete", "other seed's", "edit"] if name == "summary.json" else
                     ["flip", "truncate", "delete", "other seed's"])
    if not f.exists():
        return f"{name}: absent"
    if how == "flip":
        raw = bytearray(f.read_bytes())
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        f.write_bytes(raw)
    elif how == "truncate":
        f.write_bytes(f.read_bytes()[: rng.randrange(f.stat().st_size)])
    elif how == "delete":
        f.unlink()
    elif how == "other seed's":
        shutil.copy2(theirs, f)
    else:
        try:
            s = json.loads(f.read_text())
            s["top1"] += rng.choice([-5, 10])
        except (ValueError, KeyError, TypeError):  # damaged by an earlier change of this case
            return f"{name}: unreadable"
        f.write_text(json.dumps(s))
    return f"{name}: {how}"


@pytest.mark.slow
def test_tampered_finished_runs_are_never_reused_as_someone_elses_results(tmp_path):
    pristine = tmp_path / "pristine"
    for seed in (0, 1):
        assert _run(_teacher(pristine / f"t{seed}", seed))[0] == 0
    assert _run(_student(pristine / "s", pristine / "t0"))[0] == 0
    truth = {name: (*_results(pristine / name), _weights(pristine / name)) for name in ("t0", "t1", "s")}
    rng = random.Random(int(os.environ.get("TAMPER_SEED", "0")))
    outcomes: collections.Counter = collections.Counter()
    wrong = []
    for case in range(CASES):
        work = tmp_path / f"case{case}"
        shutil.copytree(pristine, work)
        target = rng.choice(["t0", "s"])
        other = work / ("t1" if target == "t0" else "t0")  # a student's "other run": its teacher's files
        done = [_tamper(rng, work / target, other) for _ in range(rng.randint(1, 3))]
        args = _teacher(work / "t0", 0) if target == "t0" else _student(work / "s", work / "t0")
        code, err = _run([*args, "--resume"])
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if "Traceback" in err or "internal error" in err or code not in (0, 1):
            outcome = "internal"
        elif code == 1:
            outcome = "refused" if lines and lines[-1].startswith("kdlab: error:") and str(work) in lines[-1] \
                else "unclear"
        else:
            want_metrics, want_logits, want_weights = truth[target]
            try:
                metrics, logits = _results(work / target)
            except (OSError, ValueError):  # exit 0 but results nothing can read
                metrics, logits = None, None
            same = metrics == want_metrics and np.array_equal(logits, want_logits) and \
                _same_weights(_weights(work / target), want_weights)
            outcome = ("recomputed" if "recomputing" in err else "reused") if same else "wrong"
        outcomes[outcome] += 1
        if outcome in ("internal", "unclear", "wrong"):
            wrong.append((case, target, done, outcome, err[-400:]))
        shutil.rmtree(work)
    print(dict(outcomes), file=sys.__stderr__)
    assert not wrong, wrong[:5]
