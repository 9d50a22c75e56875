"""The search itself, on deterministic objectives through the trial runner (a fake run that reports per epoch
what a formula says, writing nothing): it finds a known optimum, repeats under its seed, prunes, recovers the
trials of a worker that died, leaves a live worker's trial alone and shares one study between two workers."""

import csv
import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from kdlab.analysis.tune import plan_tune, tune
from kdlab.analysis.tune_storage import RUN_DIR, WORKER, Worker, open_storage
from kdlab.config import TeacherRunConfig, load_config
from kdlab.core.errors import ConfigError, DivergenceError

BASE = {"seed": 0, "data": {"name": "digits", "val_fraction": 0.1}, "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 3, "progress": "off"}}
LR_BEST, BS_BEST = 0.03, 48


def objective(mapping) -> float:
    """Known optimum: lr 0.03 (in log space) and batch size 48."""
    lr, bs = mapping["optim"]["lr"], mapping.get("train", {}).get("batch_size", BS_BEST)
    return -(math.log10(lr) - math.log10(LR_BEST)) ** 2 - ((bs - BS_BEST) / 32) ** 2


class FakeRun:
    """A run that reports ``score`` (the objective, the same every epoch) after each of its epochs."""

    def __init__(self, epochs: int = 3, pause: float = 0.0):
        self.epochs, self.pause, self.calls = epochs, pause, []

    def __call__(self, mapping, overrides, resume, hooks):
        assert resume and overrides == []
        load_config(TeacherRunConfig, mapping)  # each trial's config is a valid run config
        value = objective(mapping)
        ran = 0
        try:
            for epoch in range(1, self.epochs + 1):
                time.sleep(self.pause)
                ran = epoch
                for h in hooks:
                    h(epoch, {"epoch": epoch, "loss": 1.0, "score": value})
        finally:
            self.calls.append((mapping["out_dir"], mapping["optim"]["lr"], ran))
        return SimpleNamespace(run_dir=Path(mapping["out_dir"]), summary={"score": value})


@pytest.fixture
def draws():
    """Asked for by the test that looks at search.png."""


@pytest.fixture(autouse=True)
def _no_plot(request, monkeypatch):
    """Drawing search.png takes a second: only the tests that look at it draw it."""
    if "draws" not in request.fixturenames:
        monkeypatch.setattr("kdlab.analysis.tune.plot_search", lambda *a, **k: None)


def search(tmp_path, **kw):
    cfg = {"base": BASE, "search": {"optim.lr": {"float": [1e-4, 1.0], "log": True}}, "metric": "score",
           "trials": 6, "pruner": "none", "out_dir": str(tmp_path / "tune")}
    cfg.update(kw)
    return cfg


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_finds_a_known_optimum_and_writes_the_best_config(tmp_path, draws):
    run = FakeRun(epochs=1)
    cfg = search(tmp_path, trials=30, search={"optim.lr": {"float": [1e-4, 1.0], "log": True},
                                               "train.batch_size": {"int": [8, 128]}})
    res = tune(cfg, run=run)
    best = res.best
    assert abs(math.log10(best["params"]["optim.lr"]) - math.log10(LR_BEST)) < 0.25
    assert abs(best["params"]["train.batch_size"] - BS_BEST) <= 8
    # the best is the best of what ran, and best.yaml is the base config with its values
    values = [objective({"optim": {"lr": float(r["optim.lr"])}, "train": {"batch_size": int(r["train.batch_size"])}})
              for r in read_csv(tmp_path / "tune" / "trials.csv")]
    assert len(values) == 30 and best["value"] == pytest.approx(max(values))
    written = yaml.safe_load((tmp_path / "tune" / "best.yaml").read_text())
    assert written == {**BASE, "optim": {"lr": best["params"]["optim.lr"]},
                       "train": {**BASE["train"], "batch_size": best["params"]["train.batch_size"]}}
    assert (tmp_path / "tune" / "search.png").stat().st_size > 5000
    # each trial trained in its own folder under the search's
    assert sorted(d for d, _, _ in run.calls) == [str(tmp_path / "tune" / "trials" / f"trial-{i:03d}")
                                                   for i in range(30)]


def test_the_same_seed_repeats_the_search_and_a_rerun_adds_nothing(tmp_path):
    a = tune(search(tmp_path / "a", trials=4), run=FakeRun(1))
    b = tune(search(tmp_path / "b", trials=4), run=FakeRun(1))
    c = tune(search(tmp_path / "c", trials=4, seed=1), run=FakeRun(1))
    lrs = lambda res: [r["optim.lr"] for r in res.rows]  # noqa: E731
    assert lrs(a) == lrs(b) and lrs(a) != lrs(c)
    again = FakeRun(1)
    assert lrs(tune(search(tmp_path / "a", trials=4), run=again)) == lrs(a) and again.calls == []
    more = tune(search(tmp_path / "a", trials=5), run=again)  # a larger budget continues the same study
    assert lrs(more)[:4] == lrs(a) and len(more.rows) == 5 and len(again.calls) == 1


def test_a_search_continued_with_other_settings_is_refused(tmp_path):
    tune(search(tmp_path, trials=1), run=FakeRun(1))
    with pytest.raises(ConfigError, match=r"holds a search with other settings \(base.train.epochs: 3 -> 4\)"):
        tune(search(tmp_path, overrides=["train.epochs=4"]), run=FakeRun(1))
    with pytest.raises(ConfigError, match=r"holds a search with other settings \(search: "):
        tune(search(tmp_path, search={"optim.lr": {"float": [1e-3, 1.0]}}), run=FakeRun(1))


def test_pruning_stops_a_trial_worse_than_the_median_at_its_epoch(tmp_path):
    run = FakeRun(epochs=4)
    res = tune(search(tmp_path, trials=12, pruner="median", pruner_startup_trials=2, pruner_warmup_epochs=1),
               run=run)
    study = optuna.load_study(study_name="tune", storage=open_storage(None, tmp_path / "tune"))
    trials = study.get_trials()
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and res.counts()["pruned"] == len(pruned)
    ran = {Path(d).name: n for d, _, n in run.calls}
    for t in pruned:
        epoch = max(t.intermediate_values)
        assert epoch == 2 == ran[Path(t.user_attrs[RUN_DIR]).name]  # stopped after the first epoch it may be
        earlier = [u.intermediate_values[epoch] for u in trials if u.state.name == "COMPLETE" and u.number < t.number]
        assert len(earlier) >= 2 and t.intermediate_values[epoch] < _median(earlier)
    for t in trials:
        if t.state.name == "COMPLETE":
            assert ran[Path(t.user_attrs[RUN_DIR]).name] == 4
    rows = read_csv(tmp_path / "tune" / "trials.csv")
    assert {r["state"] for r in rows} == {"complete", "pruned"}
    assert all(r["epochs"] == "2" for r in rows if r["state"] == "pruned")


def _median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _running_trial(out: Path, worker: str) -> int:
    """A trial as a worker leaves it when it is killed mid-run: RUNNING, claimed, its values drawn."""
    study = optuna.load_study(study_name="tune", storage=open_storage(None, out))
    t = study.ask()
    t.set_user_attr(WORKER, worker)
    t.set_user_attr(RUN_DIR, str(out / "trials" / f"trial-{t.number:03d}"))
    t.suggest_float("optim.lr", 1e-4, 1.0, log=True)
    t.report(-1.0, 1)
    return t.number


def test_a_dead_workers_trial_is_continued_and_a_live_ones_left_alone(tmp_path):
    out = tmp_path / "tune"
    tune(search(tmp_path, trials=2), run=FakeRun(1))
    dead = _running_trial(out, "gone-123")
    with Worker(out) as alive:
        live = _running_trial(out, alive.name)
        run = FakeRun(1)
        res = tune(search(tmp_path, trials=5), run=run)
        # the live worker's trial counts toward the five and is not taken over; the dead one's is continued
        states = {r["trial"]: r["state"] for r in res.rows}
        assert states[live] == "running" and states[dead] == "interrupted"
        cont = next(r for r in res.rows if r["note"] == f"continues trial {dead}")
        assert cont["run_dir"] == f"trials/trial-{dead:03d}" and cont["state"] == "complete"
        study = optuna.load_study(study_name="tune", storage=open_storage(None, out))
        by_number = {t.number: t for t in study.get_trials()}
        assert by_number[cont["trial"]].params == by_number[dead].params  # the same values, continued
        assert by_number[cont["trial"]].intermediate_values[1] == -1.0  # what it reported before, kept
        counted = [r for r in res.rows if r["state"] in ("complete", "running")]
        assert len(counted) == 5
    # the live worker is gone now: its trial is continued too, and the search ends with five complete trials
    res = tune(search(tmp_path, trials=5), run=run)
    assert sum(r["state"] == "complete" for r in res.rows) == 5
    assert sum(r["state"] == "interrupted" for r in res.rows) == 2
    assert len({r["run_dir"] for r in res.rows if r["state"] == "complete"}) == 5


def test_two_workers_share_one_search(tmp_path):
    runs = [FakeRun(epochs=2, pause=0.03), FakeRun(epochs=2, pause=0.03)]
    errors = []

    def work(run):
        try:
            tune(search(tmp_path, trials=8), run=run)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    study = optuna.load_study(study_name="tune", storage=open_storage(None, tmp_path / "tune"))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs[WORKER] for t in trials}) == 2 and all(r.calls for r in runs)
    dirs = [d for r in runs for d, _, _ in r.calls]
    assert len(dirs) == len(set(dirs)) == 8


def test_the_metric_policy(tmp_path):
    no_val = {**BASE, "data": {"name": "digits"}}
    with pytest.raises(ConfigError, match="metric val_top1: the base config has no validation split; set "
                       "data.val_fraction .* or name another metric with --metric"):
        plan_tune({"base": no_val, "search": {"optim.lr": {"float": [0.01, 0.1]}}})
    for metric in ("test_top1", "top1", "best_top1"):
        with pytest.raises(ConfigError, match=f"metric {metric}: measured on the test split.*--allow-test-metric"):
            plan_tune({"base": BASE, "search": {"optim.lr": {"float": [0.01, 0.1]}}, "metric": metric})
    plan = plan_tune({"base": no_val, "search": {"optim.lr": {"float": [0.01, 0.1]}}, "metric": "test_top1",
                      "allow_test_metric": True})
    assert plan.direction == "maximize"
    assert plan_tune({"base": BASE, "search": {"optim.lr": {"float": [0.01, 0.1]}}, "metric": "val_nll"}) \
        .direction == "minimize"


def test_without_optuna_one_line_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(Exception, match=r"^kdlab tune needs Optuna: pip install 'kdlab\[tune\]'"):
        tune(search(tmp_path), run=FakeRun(1))


def test_an_rdb_storage_holds_the_search_and_continues_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'db' / 'tune.db'}"
    first = tune(search(tmp_path, trials=2, storage=url), run=FakeRun(1))
    assert (tmp_path / "db" / "tune.db").is_file() and not (tmp_path / "tune" / "study.journal").exists()
    more = tune(search(tmp_path, trials=3, storage=url), run=FakeRun(1))
    assert [r["optim.lr"] for r in more.rows][:2] == [r["optim.lr"] for r in first.rows]
    assert [r["state"] for r in more.rows] == ["complete"] * 3


class Failing(FakeRun):
    """Diverges (as a too-high learning rate does) above lr 0.1; ``records`` replace the epoch records."""

    def __init__(self, error=None, records=None):
        super().__init__(epochs=1)
        self.error, self.records = error, records

    def __call__(self, mapping, overrides, resume, hooks):
        if self.records is not None:
            for h in hooks:
                h(1, self.records)
            return SimpleNamespace(run_dir=Path(mapping["out_dir"]), summary={})
        if self.error is not None:
            raise self.error
        if mapping["optim"]["lr"] > 0.1:
            raise DivergenceError("loss became NaN/Inf at epoch 1, step 3 (try a lower optim.lr)")
        return super().__call__(mapping, overrides, resume, hooks)


def test_a_diverging_trial_fails_and_the_search_goes_on(tmp_path):
    res = tune(search(tmp_path, trials=8), run=Failing())
    failed = [r for r in res.rows if r["state"] == "failed"]
    assert failed and all(float(r["optim.lr"]) > 0.1 and r["note"].startswith("loss became NaN") for r in failed)
    assert sum(r["state"] == "complete" for r in res.rows) == 8 - len(failed)
    assert float(res.best["params"]["optim.lr"]) <= 0.1


def test_a_metric_the_runs_do_not_have_stops_the_search_naming_the_keys(tmp_path):
    records = {"epoch": 1, "loss": 1.0, "val_top1": 50.0, "test_top1": 40.0}
    with pytest.raises(ConfigError, match=r"^metric 'score': neither the run's epoch records \(loss, test_top1, "
                       r"val_top1\) nor its summary have it \(delete .* or choose another out_dir"):
        tune(search(tmp_path), run=Failing(records=records))


def test_a_config_error_before_any_trial_finished_stops_the_search_and_the_trial_runs_again(tmp_path):
    with pytest.raises(ConfigError, match="teacher: not found"):
        tune(search(tmp_path), run=Failing(error=ConfigError("teacher: not found")))
    res = tune(search(tmp_path), run=FakeRun(1))
    assert [r["state"] for r in res.rows] == ["interrupted"] + ["complete"] * 6
