"""``kdlab tune``: a hyper-parameter search over the keys of a train-teacher or distill run config, with Optuna's
TPE sampler (``pip install 'kdlab[tune]'``).  Settings: :class:`~kdlab.config.tune.TuneConfig`.

Each trial is a normal kdlab run in its own folder, ``<out_dir>/trials/trial-NNN``, with the trial's values set;
the trial scores the run's ``metric`` (default ``val_top1``: the validation split that ``data.val_fraction``
holds out of the training data).  Per epoch the metric goes to Optuna, and the median pruner stops a trial whose
metric is worse than the median of the earlier trials' at the same epoch (its run folder stays an unfinished run).

Metrics measured on the test split (``test_top1``, and the summary's ``top1``, ``nll``, ... ) are refused unless
``allow_test_metric`` (``--allow-test-metric``): choosing hyper-parameters by test accuracy overfits the test set,
whose numbers then no longer estimate accuracy on new data.  The default ``val_top1`` needs a validation split;
without one the search is refused unless ``metric`` names another metric explicitly.

The search continues where it stopped: running the same command again (same ``out_dir`` and storage) goes on
with the same study; a trial that was running when its process was killed is continued from its run's last
checkpoint (under a new trial number, the interrupted one marked failed and not counted).  Several processes
given the same ``out_dir`` (and storage) share one search (on one machine: the claims are file locks), each taking
the next trial until ``trials`` are done.  Writes ``trials.csv``, ``search.png`` and ``best.yaml`` (the base config
with the best trial's values, ready for ``kdlab distill`` / ``kdlab train-teacher``).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.analysis.tune_output import plot_search, trial_rows, write_best_yaml, write_trials_csv
from kdlab.analysis.tune_storage import (
    CONTINUES,
    RUN_DIR,
    WORKER,
    Worker,
    continued_numbers,
    import_optuna,
    open_storage,
    quiet_optuna,
    recover_interrupted,
    search_lock,
)
from kdlab.analysis.tune_trial import EpochReporter, MissingMetric, RunFn, replay, score, suggest
from kdlab.config import dump_yaml, load_config
from kdlab.config.tune import (
    TuneConfig,
    base_mapping,
    check_search,
    kind_of,
    load_tune_config,
    run_schema,
    trial_mapping,
)
from kdlab.core import log
from kdlab.core.checkpoint import atomic_write_text
from kdlab.core.errors import ConfigError, DivergenceError, interrupted_line, mark_reported
from kdlab.runs.folder import config_differences

# summary keys measured on the test split (a metric named ``test_*`` is one too)
TEST_SUMMARY_KEYS = frozenset({"top1", "top5", "nll", "ece", "nll_ts", "ece_ts", "best_top1", "best_epoch",
                               "agreement", "kl_teacher_student", "cka_teacher_student", "pstar_l1_test"})
SETTINGS_ATTR = "kdlab_tune"
CONTINUES_SEARCH = "the search's finished trials are kept and running the same command again continues it"


@dataclass
class TunePlan:
    """A checked search: its settings, the base run config (as written), schema and kind, where it writes."""

    cfg: TuneConfig
    raw: dict[str, Any]
    schema: type
    kind: str
    direction: str
    out_dir: Path
    base_plain: dict[str, Any] = field(default_factory=dict)

    def trial_dir(self, number: int) -> Path:
        return self.out_dir / "trials" / f"trial-{number:03d}"

    def settings(self) -> dict[str, Any]:
        """What a search in this folder must keep when it continues (``trials`` may grow; ``seed``, the pruner
        and the storage may change)."""
        return {"kind": self.kind, "base": self.base_plain, "search": self.cfg.model_dump(mode="json")["search"],
                "metric": self.cfg.metric, "direction": self.direction}


@dataclass
class TuneResult:
    out_dir: Path
    rows: list[dict[str, Any]]  # trials.csv's rows
    best: dict[str, Any] | None  # trial, value, params, run_dir of the best complete trial (None: none complete)
    best_config: dict[str, Any] | None  # the base config with the best values (best.yaml)
    metric: str
    direction: str

    def counts(self) -> dict[str, int]:
        """Trials per state (complete, pruned, failed, interrupted)."""
        return _counts(self.rows)


def has_val_split(plain: dict[str, Any]) -> bool:
    """Whether the run holds out a validation split (``data.val_fraction`` above 0)."""
    data = plain.get("data") if isinstance(plain.get("data"), dict) else {}
    v = data.get("val_fraction")
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def is_test_metric(metric: str) -> bool:
    return metric.startswith("test_") or metric in TEST_SUMMARY_KEYS


def plan_tune(config: Any) -> TunePlan:
    """Validate a search before anything trains: settings, base config, every search key and value, metric."""
    cfg = load_tune_config(config)
    raw = base_mapping(cfg)
    schema = run_schema(cfg, raw)
    check_search(cfg, raw, schema)
    plain = load_config(schema, raw).model_dump(mode="json")
    metric = cfg.metric
    if is_test_metric(metric):
        if not cfg.allow_test_metric:
            raise ConfigError(f"metric {metric}: measured on the test split; selecting hyper-parameters on it "
                              "overfits the test set; hold out a validation split (data.val_fraction=0.1) and "
                              "tune val_top1, or pass --allow-test-metric")
        log.info(f"kdlab: warning: the search selects on the test split ({metric}): its test numbers are no "
                 "longer an unbiased estimate; report a validation metric or a fresh test set")
    elif metric.startswith("val_") and not has_val_split(plain):
        how = "" if "metric" in cfg.model_fields_set else " or name another metric with --metric"
        raise ConfigError(f"metric {metric}: the base config has no validation split; set data.val_fraction "
                          f"(e.g. the override data.val_fraction=0.1){how}")
    plain.pop("out_dir", None)
    return TunePlan(cfg, raw, schema, kind_of(schema), cfg.resolved_direction(), Path(cfg.out_dir), plain)


def _check_same_search(study, plan: TunePlan) -> None:
    """A study continued in its folder must be the same search; the first worker records what it is."""
    mine = plan.settings()
    saved = study.user_attrs.get(SETTINGS_ATTR)
    if saved is None:
        study.set_user_attr(SETTINGS_ATTR, mine)
        return
    diff = [f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in ("kind", "metric", "direction", "search")
            if saved.get(k) != mine[k]]
    diff += [f"base.{d}" for d in config_differences(saved.get("base") or {}, mine["base"])]
    if diff:
        raise ConfigError(f"{plan.out_dir} holds a search with other settings ({diff[0]}); run it with its own "
                          "settings, or choose another out_dir")


def _sampler(optuna, plan: TunePlan, n_before: int):
    """TPE seeded from the search's seed and the trials before this one: a search repeats, and two workers never
    draw from the same random stream."""
    seed = int.from_bytes(hashlib.sha256(f"{plan.cfg.seed}:{n_before}".encode()).digest()[:4], "little")
    startup = plan.cfg.startup_trials or max(2, min(10, plan.cfg.trials // 4))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _pruner(optuna, plan: TunePlan):
    if plan.cfg.pruner == "none":
        return optuna.pruners.NopPruner()
    # Optuna's steps are the epochs, from 1; it prunes from step n_warmup_steps on
    return optuna.pruners.MedianPruner(n_startup_trials=plan.cfg.pruner_startup_trials,
                                       n_warmup_steps=plan.cfg.pruner_warmup_epochs + 1)


@dataclass
class _Taken:
    trial: Any
    params: dict[str, Any]
    run_dir: Path
    earlier: Any = None  # the interrupted trial it continues


def _take_trial(optuna, study, plan: TunePlan, worker: Worker) -> _Taken | None:
    """Under the search's lock: recover interrupted trials, then take the next trial (an enqueued continuation
    first); None when the planned trials are all taken."""
    with search_lock(plan.out_dir):
        for t in recover_interrupted(study, plan.out_dir):
            log.info(f"tune: trial {t.number} was interrupted (its process ended); it continues from its run's "
                     "last checkpoint")
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == optuna.trial.TrialState.WAITING for t in trials)
        replaced = continued_numbers(trials)
        used = sum(1 for t in trials if t.number not in replaced and t.state != optuna.trial.TrialState.WAITING)
        if not waiting and used >= plan.cfg.trials:
            return None
        study.sampler = _sampler(optuna, plan, len(trials))
        trial = study.ask()
        trial.set_user_attr(WORKER, worker.name)
        run_dir = Path(trial.user_attrs.get(RUN_DIR) or plan.trial_dir(trial.number))
        trial.set_user_attr(RUN_DIR, str(run_dir))
        params = {k: suggest(trial, k, d) for k, d in plan.cfg.search.items()}
        earlier = None
        if CONTINUES in trial.user_attrs:
            earlier = next(t for t in trials if t.number == trial.user_attrs[CONTINUES])
        return _Taken(trial, params, run_dir, earlier)


def _show(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _run_trial(optuna, study, plan: TunePlan, taken: _Taken, run: RunFn, summary_keys: set[str]) -> None:
    trial, params, run_dir = taken.trial, taken.params, taken.run_dir
    metric = plan.cfg.metric
    mapping = trial_mapping(plan.raw, params, str(run_dir))
    again = f" (continues trial {taken.earlier.number})" if taken.earlier is not None else ""
    log.info(f"tune: trial {trial.number}{again}: {_show(params)}")
    if taken.earlier is not None:
        replay(trial, taken.earlier)
    try:
        load_config(plan.schema, mapping)
    except ConfigError as e:  # the values together make no valid run (each was checked alone)
        _fail(optuna, study, trial, f"invalid combination: {e}")
        return
    reporter = EpochReporter(trial, metric, plan.cfg.pruner != "none", summary_keys,
                             taken.earlier.intermediate_values if taken.earlier is not None else ())
    t0 = time.perf_counter()
    try:
        result = run(mapping, [], resume=True, hooks=[reporter])
        value = score(metric, result.summary, reporter, run_dir)
    except optuna.TrialPruned as e:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        log.info(f"tune: trial {trial.number} {e}")
        return
    except DivergenceError as e:  # an unstable setting: a result of the search, not a reason to stop it
        _fail(optuna, study, trial, str(e))
        return
    except MissingMetric as e:  # every trial would fail alike
        _fail(optuna, study, trial, str(e))
        raise ConfigError(f"{e} (delete {plan.out_dir} or choose another out_dir to search again)") from None
    except ConfigError as e:
        if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
            raise  # most likely the base config's (no trial ran): the trial runs again once it is fixed
        _fail(optuna, study, trial, str(e))  # this trial's values make a run that cannot train
        return
    if not math.isfinite(value):
        _fail(optuna, study, trial, f"{metric} is {value}")
        return
    study.tell(trial, value)
    best = study.best_trial
    log.info(f"tune: trial {trial.number} -> {metric} {value:.4f} in {time.perf_counter() - t0:.1f} s "
             f"(best {best.value:.4f}, trial {best.number})")


def _fail(optuna, study, trial, why: str) -> None:
    trial.set_user_attr("kdlab_error", why[:500])
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    log.info(f"tune: trial {trial.number} failed: {why}")


def _default_run(kind: str) -> RunFn:
    if kind == "teacher":
        from kdlab.runs.teacher import train_teacher

        return train_teacher
    from kdlab.runs.student import distill

    return distill


def tune(config: Any, run: RunFn | None = None) -> TuneResult:
    """Run (or continue) the search ``config`` describes (a tune YAML file, a mapping or a
    :class:`~kdlab.config.tune.TuneConfig`) until its planned trials are done; returns its trials and the best.

    ``run``: what trains a trial, ``(config mapping, overrides, resume=True, hooks=[...]) -> RunResult``
    (default: :func:`~kdlab.runs.teacher.train_teacher` or :func:`~kdlab.runs.student.distill`).  Interrupted
    (Ctrl-C), it logs one line and raises KeyboardInterrupt again; the search continues when called again.
    """
    plan = plan_tune(config)
    optuna = import_optuna()
    from kdlab.runs.summary import RunSummary

    summary_keys = set(RunSummary.keys("column")) | {"val_top1", "val_nll"}
    run = run or _default_run(plan.kind)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(plan.cfg.storage, plan.out_dir)
    try:
        with quiet_optuna(), Worker(plan.out_dir) as worker:
            with search_lock(plan.out_dir):
                study = optuna.create_study(storage=storage, study_name=plan.cfg.name, direction=plan.direction,
                                            load_if_exists=True)
                if study.direction.name.lower() != plan.direction:
                    raise ConfigError(f"{plan.out_dir}: its study {plan.cfg.name!r} is to "
                                      f"{study.direction.name.lower()} (direction)")
                _check_same_search(study, plan)
                atomic_write_text(plan.out_dir / "tune.yaml", dump_yaml(plan.cfg))
            study.pruner = _pruner(optuna, plan)
            while (taken := _take_trial(optuna, study, plan, worker)) is not None:
                _run_trial(optuna, study, plan, taken, run, summary_keys)
                with search_lock(plan.out_dir):
                    _outputs(study, plan, plot=False)
            with search_lock(plan.out_dir):
                return _outputs(study, plan, plot=True)
    except KeyboardInterrupt as e:
        log.info(interrupted_line(e, CONTINUES_SEARCH + " (the interrupted trial from its last checkpoint)"))
        mark_reported(e)
        raise


def _outputs(study, plan: TunePlan, plot: bool) -> TuneResult:
    trials = study.get_trials(deepcopy=False)
    keys = list(plan.cfg.search)
    rows = trial_rows(trials, keys, plan.out_dir)
    write_trials_csv(rows, keys, plan.out_dir)
    best = best_config = None
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if complete:
        pick = max if plan.direction == "maximize" else min
        b = pick(complete, key=lambda t: t.value)
        params = {k: suggest_value(b.params[k], plan.cfg.search[k]) for k in keys if k in b.params}
        best = {"trial": b.number, "value": b.value, "params": params, "run_dir": b.user_attrs.get(RUN_DIR)}
        best_config = trial_mapping(plan.raw, params, None)
        if plot:
            counts = ", ".join(f"{n} {state}" for state, n in _counts(rows).items())
            write_best_yaml(best_config, f"kdlab tune: the best of {plan.out_dir}'s trials ({counts}): trial "
                            f"{b.number}, {plan.cfg.metric} {b.value:.6g}\n" + "".join(
                                f"  {k}: {v}\n" for k, v in params.items()), plan.out_dir)
    if plot:
        plot_search(rows, plan.cfg.metric, plan.direction, f"{plan.cfg.name}: {plan.cfg.metric} per trial "
                    f"({plan.direction})", plan.out_dir)
    return TuneResult(plan.out_dir, rows, best, best_config, plan.cfg.metric, plan.direction)


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["state"]] = out.get(r["state"], 0) + 1
    return out


def suggest_value(stored: Any, dist) -> Any:
    """A trial's stored Optuna value as the config takes it (a list choice is stored as its JSON text)."""
    if dist.kind != "choice":
        return stored
    from kdlab.analysis.tune_trial import encode_choice

    return next((c for c in dist.choices if encode_choice(c) == stored), stored)


__all__ = ["TunePlan", "TuneResult", "has_val_split", "is_test_metric", "plan_tune", "tune"]
