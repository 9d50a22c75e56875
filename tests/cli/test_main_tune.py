"""``kdlab tune`` on the command line: a run config plus --search options, or a tune file; the best config printed
as YAML and written to best.yaml; a bad key, distribution or metric is one line and exit status 2."""

import csv

import pytest
import yaml

from cli_run import run, write
from kdlab.cli.main import main

BASE = {"seed": 0, "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]}, "optim": {"lr": 0.05},
        "schedule": {"name": "constant"}, "train": {"epochs": 2, "batch_size": 64, "progress": "off",
                                                    "tensorboard": False}}


@pytest.mark.fast
def test_tune_has_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["tune", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage: kdlab tune" in out and "--search KEY=DIST" in out


def test_a_run_config_with_search_options_and_a_tune_file(tmp_path, capsys):
    base = write(tmp_path / "base.yaml", BASE)
    out = tmp_path / "t"
    code, stdout, err = run(capsys, "tune", base, "--search", "optim.lr=float:0.001:0.5:log", "--trials", "2",
                            "--out", out, "--pruner", "none", "data.val_fraction=0.1")
    assert code == 0, err
    assert stdout.startswith("best: trial ") and "val_top1" in stdout
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["value"]))
    assert stdout.startswith(f"best: trial {best['trial']}, val_top1 {float(best['value']):.4f} (2 complete)")
    printed = stdout.split("\n", 2)[2].rsplit("trials: ", 1)[0]  # the YAML between the two lines
    written = yaml.safe_load((out / "best.yaml").read_text())
    assert yaml.safe_load(printed) == written
    assert written == {**BASE, "data": {"name": "digits", "val_fraction": 0.1},
                       "optim": {"lr": pytest.approx(float(best["optim.lr"]))}}
    assert (out / "search.png").is_file() and "tune: trial 1" in err
    # the same search as a tune file, continued with a larger budget: one more trial
    tune_file = write(tmp_path / "tune.yaml", {"base": str(base), "overrides": ["data.val_fraction=0.1"],
                                               "search": {"optim.lr": {"float": [0.001, 0.5], "log": True}},
                                               "trials": 3, "pruner": "none", "out_dir": str(out)})
    code, stdout, err = run(capsys, "tune", tune_file)
    assert code == 0, err
    assert "(3 complete)" in stdout.splitlines()[0] and err.count("tune: trial ") == 2  # trial 2 and its result


@pytest.mark.parametrize("args, expected", [
    (["--search", "optim.lrr=float:0.01:0.1"], "kdlab: error: search.optim.lrr: optim.lrr is not a key of a "
     "teacher config; did you mean 'lr'?"),
    (["--search", "optim.lr=float:0.01"], "kdlab: error: --search optim.lr: expected float:LOW:HIGH"),
    (["--search", "optim.lr=float:0.1:0.01"], "kdlab: error: tune config: search.optim.lr: float: low must be "
     "below high"),
    (["--search", "train.epochs=float:1:4"], "kdlab: error: search.train.epochs: the value 2.11"),
    (["--search", "optim.lr=float:0.01:0.1", "--metric", "val_top1"], "kdlab: error: metric val_top1: the base "
     "config has no validation split"),
    (["--search", "optim.lr=float:0.01:0.1", "--metric", "test_top1"], "kdlab: error: metric test_top1: measured on "
     "the test split"),
    ([], "kdlab: error: tune config: search: give at least one key to search"),
])
def test_a_bad_search_is_one_line_naming_it(tmp_path, capsys, args, expected):
    base = write(tmp_path / "base.yaml", BASE)
    code, _, err = run(capsys, "tune", base, *args, "--out", tmp_path / "t")
    assert code == 2 and err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "t").exists()  # refused before anything ran
