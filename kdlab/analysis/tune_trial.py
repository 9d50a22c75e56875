"""One trial of ``kdlab tune``: its values drawn (:func:`suggest`), its run trained in its own run folder with an
epoch hook that reports the metric to Optuna and stops a pruned run (:class:`EpochReporter`), and its score.

A trial's run is a normal kdlab run (``resume=True``): a trial continued after a kill resumes the run folder from
its last checkpoint, and a run that had finished is reused.  A pruned run stops by an exception raised in the hook
after its epoch's checkpoint: it leaves a run folder without a summary, an unfinished run, never taken for a
finished one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdlab.analysis.tune_storage import import_optuna
from kdlab.config.tune import Distribution
from kdlab.core.errors import ConfigError
from kdlab.runs.folder import RunFolder

RunFn = Callable[..., Any]  # train_teacher / distill: (config, overrides, resume=, hooks=) -> RunResult


def encode_choice(value: Any) -> Any:
    """An Optuna category: a scalar as it is, a list or mapping as its JSON text (Optuna holds scalars only)."""
    return value if value is None or isinstance(value, str | int | float | bool) else json.dumps(value)


def suggest(trial, key: str, dist: Distribution) -> Any:
    """The trial's value of ``key`` (an enqueued trial's own value when it continues an interrupted one)."""
    if dist.kind == "choice":
        options = {repr(encode_choice(c)): c for c in dist.choices}
        picked = trial.suggest_categorical(key, [encode_choice(c) for c in dist.choices])
        return options[repr(picked)]
    if dist.kind == "int":
        return trial.suggest_int(key, int(dist.low), int(dist.high), step=int(dist.step or 1), log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


class MissingMetric(ConfigError):
    """The tune's metric is neither in the run's epoch records nor in its summary."""


class EpochReporter:
    """The trial's epoch hook: reports ``metric`` of each epoch record that has it, and raises ``TrialPruned``
    when the pruner says so (``prune``).  An evaluated epoch (one with ``test_top1``) without the metric, which
    the run's summary does not have either, is a ConfigError naming the keys there are."""

    def __init__(self, trial, metric: str, prune: bool, summary_keys: set[str], reported=()):
        self.trial, self.metric, self.prune, self.summary_keys = trial, metric, prune, summary_keys
        self.reported = set(reported)  # epochs an interrupted trial reported already (replayed)
        self.last: tuple[int, float] | None = None

    def __call__(self, epoch: int, rec: dict[str, Any]) -> None:
        if self.metric not in rec:
            if "test_top1" in rec and self.metric not in self.summary_keys:
                have = ", ".join(sorted(k for k in rec if k != "epoch"))
                raise MissingMetric(f"metric {self.metric!r}: neither the run's epoch records ({have}) nor its "
                                    "summary have it")
            return
        value = float(rec[self.metric])
        self.last = (epoch, value)
        if not math.isfinite(value) or epoch in self.reported:
            return
        self.trial.report(value, epoch)
        if self.prune and self.trial.should_prune():
            raise import_optuna().TrialPruned(f"pruned at epoch {epoch} ({self.metric} {value:.4g})")


def replay(trial, earlier) -> None:
    """Report again what the interrupted trial ``earlier`` reported (its run resumes after those epochs, whose
    hooks do not run again)."""
    for step, value in sorted(earlier.intermediate_values.items()):
        trial.report(value, step)


def score(metric: str, summary: dict[str, Any], reporter: EpochReporter, run_dir: Path) -> float:
    """The trial's value: the run summary's ``metric``, else its last epoch record's (a reused run's records are
    read from its folder)."""
    if isinstance(summary.get(metric), int | float) and not isinstance(summary.get(metric), bool):
        return float(summary[metric])
    if reporter.last is not None:
        return reporter.last[1]
    last = None
    path = RunFolder(run_dir).metrics_file
    if path.is_file():
        for line in path.read_text().splitlines():
            with_metric = json.loads(line) if line.strip() else {}
            if metric in with_metric:
                last = float(with_metric[metric])
    if last is None:
        raise MissingMetric(f"metric {metric!r}: the run in {run_dir} has it neither in its epoch records nor in "
                            "its summary")
    return last
