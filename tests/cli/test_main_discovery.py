"""Finding one's way in the CLI: --debug anywhere, user modules from the working folder, clean errors on tiny data
sets, --print-config / --dry-run, ``kdlab schema`` and the parameter tables of ``kdlab list``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cli_run import run, write
from conftest import TINY_DATA, TINY_TRAIN, student_cfg, teacher_cfg
from kdlab.cli.main import SCHEMA_KINDS
from kdlab.config import DistillRunConfig, EvalConfig, StudyConfig, load_config
from kdlab.config.describe import schema_rows
from kdlab.data.base import ArrayLoader, Split
from kdlab.runs.folder import RunFolder
from kdlab.runs.resolve import resolve_student_run


def arrays(folder: Path, n_train: int, n_test: int = 4) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name, n in (("train", n_train), ("test", n_test)):
        np.savez(folder / f"{name}.npz", x=rng.normal(size=(n, 1, 4, 4)).astype(np.float32), y=np.arange(n) % 2)
    return folder


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


# -- --debug ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["before", "after", "after overrides"])
def test_debug_is_accepted_before_and_after_the_subcommand(tmp_path, capsys, where):
    root = arrays(tmp_path / "one", 1)
    args = ["train-teacher", "data.name=arrays", f"data.root={root}", "model=mlp"]
    argv = {"before": ["--debug", *args], "after": [args[0], "--debug", *args[1:]],
            "after overrides": [*args, "--debug"]}[where]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("kdlab: error: arrays:")


def test_without_debug_an_error_is_one_line(tmp_path, capsys):
    root = arrays(tmp_path / "one", 1)
    code, _, err = run(capsys, "train-teacher", "data.name=arrays", f"data.root={root}", "model=mlp")
    assert code == 1 and len(err.strip().splitlines()) == 1


# -- the console script imports modules of the working folder -------------------------------------------------

SMALL_CNN = '''
import torch.nn as nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.stage2 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(8 * 2 * 2, num_classes)

    def forward(self, x):
        return self.fc(self.stage2(self.stage1(x)).flatten(1))
'''


def test_console_script_imports_a_module_of_the_working_folder(tmp_path):
    script = Path(sys.executable).with_name("kdlab")  # the installed entry point, not python -m kdlab
    assert script.is_file(), f"kdlab is not installed beside {sys.executable} (pip install -e .)"
    (tmp_path / "mynets.py").write_text(SMALL_CNN)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(script), "train-teacher", "data=digits", "model.name=module",
                           "model.target=mynets:SmallCNN", "train.epochs=1", "train.progress=off",
                           "train.batch_size=256", "out_dir=run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert RunFolder(tmp_path / "run").summary_file.is_file()


# -- empty and one-sample data sets ---------------------------------------------------------------------------

def test_empty_and_one_sample_data_sets_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    for n, msg in ((0, "holds no samples"), (1, "the training split has 1 sample")):
        root = arrays(tmp_path / f"n{n}", n)
        code, _, err = run(capsys, "train-teacher", "data.name=arrays", f"data.root={root}", "model=mlp",
                           f"out_dir={tmp_path / f'run{n}'}")
        assert code == 1 and msg in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / f"run{n}").exists()
    root = arrays(tmp_path / "n3", 3)
    code, _, err = run(capsys, "train-teacher", "data.name=arrays", f"data.root={root}", "model=mlp", "holdout=0.6")
    assert code == 1 and "after holdout 0.6" in err
    code, _, err = run(capsys, "train-teacher", "data.name=mnist1d", "data.num_samples=5", "model=cnn1d")
    assert code == 2 and "data.num_samples: Input should be greater than or equal to 10 (got 5)" in err
    code, _, err = run(capsys, "train-teacher", "data=digits", "data.test_fraction=0.9995", "model=mlp")
    assert code == 2 and err.startswith("kdlab: error: data.test_fraction: 0.9995") and len(err.splitlines()) == 1


def test_a_last_training_batch_of_one_sample_is_dropped_not_fatal(tmp_path, capsys):
    split = Split(torch.zeros(65, 1, 4, 4), torch.zeros(65, dtype=torch.long))
    train = ArrayLoader(split, 64, torch.device("cpu"), shuffle=True)
    assert len(train) == len(list(train.epoch(0))) == 1
    evaluation = ArrayLoader(split, 64, torch.device("cpu"))
    assert sum(len(b.y) for b in evaluation.epoch(0)) == 65  # evaluation keeps every sample
    root = arrays(tmp_path / "n65", 65)  # batch norm in the mlp: a batch of one would fail the step
    code, out, err = run(capsys, "train-teacher", "data.name=arrays", f"data.root={root}", "model=mlp",
                         "train.epochs=1", "train.progress=off", f"out_dir={tmp_path / 'run'}")
    assert code == 0, err


# -- --print-config and --dry-run -----------------------------------------------------------------------------

def test_print_config_of_a_teacher_is_what_the_run_saves_and_writes_nothing(tmp_path, capsys):
    cfg = write(tmp_path / "t.yaml", {k: v for k, v in teacher_cfg(None).items() if k != "out_dir"})
    before = files_under(tmp_path)
    for flag in ("--print-config", "--dry-run"):
        code, out, _ = run(capsys, "train-teacher", cfg, "train.epochs=1", "seed=3", flag)
        assert code == 0 and files_under(tmp_path) == before
        printed = yaml.safe_load(out)  # the dry run's notes are comments: still the same YAML
        assert printed["out_dir"] == "runs/teacher-resnet8-standard-s3" and printed["train"]["epochs"] == 1
    assert "# dry run: would train a new teacher in runs/teacher-resnet8-standard-s3" in out
    code, _, _ = run(capsys, "train-teacher", cfg, "train.epochs=1", "seed=3")
    assert code == 0
    saved = yaml.safe_load(Path("runs/teacher-resnet8-standard-s3/config.yaml").read_text())
    assert saved == printed


def test_dry_run_says_what_would_happen_to_an_existing_run(tmp_path, capsys, trained_teacher):
    tdir = trained_teacher.run_dir
    cfg = write(tmp_path / "t.yaml", yaml.safe_load((tdir / "config.yaml").read_text()))
    before = files_under(tdir)
    code, _, err = run(capsys, "train-teacher", cfg, "--dry-run")
    assert code == 1 and "already holds a finished run" in err  # as the command itself refuses
    code, out, _ = run(capsys, "train-teacher", cfg, "--dry-run", "--resume")
    assert code == 0 and f"# dry run: would reuse the finished teacher in {tdir}" in out
    code, out, _ = run(capsys, "train-teacher", cfg, "--dry-run", "--overwrite")
    assert code == 0 and "(--overwrite)" in out and files_under(tdir) == before


def test_distill_dry_run_checks_the_teacher_and_prints_the_resolved_method(tmp_path, capsys, trained_teacher):
    cfg = student_cfg(tmp_path / "student", trained_teacher.run_dir, protocol="soteacher")
    path = write(tmp_path / "s.yaml", cfg)
    code, out, _ = run(capsys, "distill", path, "--print-config")
    assert code == 0 and yaml.safe_load(out) == resolve_student_run(cfg).plain
    assert yaml.safe_load(out)["method"]["gamma"] is not None  # the protocol filled in what the config left open
    code, out, _ = run(capsys, "distill", path, "--dry-run")
    assert code == 0 and f"teacher checkpoint: {trained_teacher.run_dir / 'checkpoints' / 'last.pt'}" in out
    assert f"would train a new student in {tmp_path / 'student'}" in out and not (tmp_path / "student").exists()
    code, _, err = run(capsys, "distill", path, f"teacher.path={tmp_path / 'nowhere'}", "--dry-run")
    assert code == 1 and "not found" in err
    code, _, err = run(capsys, "distill", path, "method.TT=2", "--print-config")
    assert code == 2 and "method.TT: unknown key" in err


def test_study_dry_run_lists_the_planned_runs_and_writes_nothing(tmp_path, capsys):
    study = {"name": "tiny", "out_dir": str(tmp_path / "study"), "seeds": [0], "data": dict(TINY_DATA),
             "teacher": {"model": "resnet8", "train": dict(TINY_TRAIN)},
             "student": {"model": "resnet8", "methods": {"alone": "none", "kd": "kd"}, "train": dict(TINY_TRAIN)}}
    path = write(tmp_path / "study.yaml", study)
    code, out, _ = run(capsys, "study", path, "--print-config")
    assert code == 0 and yaml.safe_load(out) == load_config(StudyConfig, study).model_dump(mode="json")
    code, out, _ = run(capsys, "study", path, "--dry-run", "seeds=[0,1]")
    assert code == 0 and "# dry run: 6 runs (6 new)" in out and out.count("(new: trained)") == 6
    assert yaml.safe_load(out)["seeds"] == [0, 1] and not (tmp_path / "study").exists()


def test_eval_print_config_and_dry_run(capsys, trained_teacher):
    code, out, _ = run(capsys, "eval", trained_teacher.run_dir, "checkpoint=best", "--print-config")
    assert code == 0 and yaml.safe_load(out) == load_config(
        EvalConfig, {"path": str(trained_teacher.run_dir), "checkpoint": "best"}).model_dump(mode="json")
    code, out, _ = run(capsys, "eval", trained_teacher.run_dir, "checkpoint=best", "--dry-run")
    assert code == 0 and f"would evaluate {trained_teacher.run_dir / 'checkpoints' / 'best.pt'}" in out
    code, _, err = run(capsys, "eval", trained_teacher.run_dir, "checkpoint=epoch_999", "--dry-run")
    assert code == 1 and "no checkpoint 'epoch_999'" in err


# -- kdlab schema ---------------------------------------------------------------------------------------------

def test_schema_prints_type_default_and_meaning_of_each_key(capsys):
    code, out, _ = run(capsys, "schema", "teacher")
    assert code == 0
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in out.splitlines()
            if ln.startswith("| ") and not ln.startswith("| key ")}
    assert rows["optim.lr"] == ["float > 0", "0.05", "base learning rate, scaled by the schedule"]
    assert rows["model"][:2] == ["model (kdlab list models)", "required"]
    assert rows["train.precision"][:2] == ["fp32/bf16/fp16", "fp32"]
    assert rows["holdout"][0] == "float >= 0, < 1"
    assert "model.name" not in rows  # a component is one value (its parameters: kdlab list)
    code, out, _ = run(capsys, "schema", "study", "pairs")
    assert code == 0 and "| pairs[].student_lr " in out and "| seeds " not in out
    code, _, err = run(capsys, "schema", "distill", "optim.lrr")
    assert code == 2 and "did you mean 'optim.lr'" in err


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_every_config_key_has_a_description(kind):
    missing = [r.key for r in schema_rows(kind) if not r.description]
    assert not missing, f"add Field(description=...) in kdlab/config/schema.py for: {', '.join(missing)}"


def test_the_cli_names_every_schema():
    from kdlab.config import describe

    assert SCHEMA_KINDS == describe.SCHEMA_KINDS == tuple(describe._schemas())
    assert describe._schemas()["distill"] is DistillRunConfig


# -- kdlab list: parameters -----------------------------------------------------------------------------------

def test_list_shows_each_method_parameter_with_type_and_meaning(capsys):
    from kdlab.config.describe import param_rows
    from kdlab.core.registry import DISTILL_METHODS, TEACHER_METHODS

    for what, registry in (("distill-methods", DISTILL_METHODS), ("teacher-methods", TEACHER_METHODS)):
        code, out, _ = run(capsys, "list", what)
        assert code == 0
        lines = [ln.replace(" ", "") for ln in out.splitlines()]
        for entry in registry.entries():
            for row in param_rows(entry.params):
                cells = "|" + "|".join(c.replace(" ", "") for c in row.cells()) + "|"
                assert cells in lines, (entry.name, row)
    code, out, _ = run(capsys, "list", "distill-methods")
    assert "| T                 | float > 0          | 4.0      | KD temperature" in out
    assert "crd (Tian et al. 2020): and the common parameters above" in out
    code, out, _ = run(capsys, "list", "soteacher")
    assert code == 0 and "| lambda_lr      | float >= 0" in out and "weight of the Lipschitz term" in out


def test_list_one_component_and_unknown_names(capsys):
    code, out, _ = run(capsys, "list", "models", "wrn")
    assert code == 0 and out.startswith("wrn: ") and "| depth " in out
    code, _, err = run(capsys, "list", "kdd")
    assert code == 2 and "did you mean 'kd'" in err
    code, _, err = run(capsys, "list", "datasets", "kd")
    assert code == 2 and "no dataset 'kd'" in err


def test_the_stored_catalogue_is_current_and_equals_the_registries():
    """``kdlab list`` prints kdlab/cli/catalogue.json without importing torch; after changing a component, run
    ``python -m kdlab.cli.listing --write-catalogue``."""
    # in a fresh process: other tests register components of their own (test-only teacher methods) in this one
    code = """
import json
from kdlab.cli.listing import catalogue_from_registry, read_catalogue, source_fingerprint
stored = read_catalogue()
CATALOGUE, FINGERPRINT = stored["catalogue"], stored["fingerprint"]
from kdlab.core.registry import DATASETS, DISTILL_METHODS, MODELS, TEACHER_METHODS

names = all([e["name"] for e in CATALOGUE[k]] == r.names() for k, r in (("models", MODELS),
            ("teacher-methods", TEACHER_METHODS), ("distill-methods", DISTILL_METHODS), ("datasets", DATASETS)))
print(json.dumps([names, catalogue_from_registry() == CATALOGUE, source_fingerprint() == FINGERPRINT]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, True, True], \
        "stale: run `python -m kdlab.cli.listing --write-catalogue`"


def test_a_catalogue_of_other_sources_is_not_used():
    # in a fresh process (no component imported yet), as the `kdlab list` command runs
    code = """
import sys
import kdlab.cli.listing as listing
from kdlab.cli.listing import catalogue, source_fingerprint
fake = {k: [] for k in listing.read_catalogue()["catalogue"]}
stored = {"fingerprint": source_fingerprint(), "catalogue": fake}
listing.read_catalogue = lambda: stored
print(catalogue() is fake, 'torch' in sys.modules)
stored["fingerprint"] = 'other sources'
print('resnet8' in [e['name'] for e in catalogue()['models']])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["True", "False", "True"], out.stderr
