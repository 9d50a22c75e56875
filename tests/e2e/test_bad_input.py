"""User input that used to end in an internal error (or a silently wrong run): a one-line error naming the
problem, exit 2 for config errors and 1 otherwise, before anything is written."""

import os

import numpy as np
import pytest

from cli_run import run, write
from kdlab.cli.main import main
from kdlab.runs.folder import RunFolder
from study_configs import study_cfg


def _arrays(folder, x_train, y_train, x_test=None, y_test=None):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", x=x_train, y=y_train)
    np.savez(folder / "test.npz", x=x_train if x_test is None else x_test, y=y_train if y_test is None else y_test)
    return folder


def _run(tmp_path, data_dir, *extra):
    return main(["train-teacher", f"out_dir={tmp_path / 'run'}", "data.name=arrays", f"data.root={data_dir}",
                 "model=mlp", "train.epochs=1", "train.progress=off", *extra])


RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 6)).astype(np.float32)
Y = np.arange(40) % 4


@pytest.mark.parametrize("case, message", [
    ("stray", "never occur in train.npz or test.npz"),
    ("column", "y must be a vector of 40 labels, got shape (40, 1) (use y.ravel())"),
    ("rank1", "x must have one row per sample"),
    ("strings", "x must hold numbers"),
    ("huge", "never occur in train.npz or test.npz"),
    ("negative", "labels must be >= 0"),
])
def test_arrays_refuse_inconsistent_labels_and_inputs(tmp_path, capsys, case, message):
    y, x = Y.copy(), X
    if case == "stray":
        y[7] = 99
    elif case == "column":
        y = y[:, None]
    elif case == "rank1":
        x = X[:, 0]
    elif case == "strings":
        x = np.array([[f"s{i}", "t"] for i in range(40)])
    elif case == "huge":
        y[3] = 2 ** 40
    elif case == "negative":
        y[0] = -1
    d = _arrays(tmp_path / "data", x, y)
    assert _run(tmp_path, d) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_declared_class_count_allows_absent_classes_and_refuses_labels_beyond(tmp_path, capsys):
    d = _arrays(tmp_path / "data", X, Y)
    assert _run(tmp_path, d, "data.num_classes=6") == 0  # classes 4 and 5 never occur: declared, so fine
    assert _run(tmp_path, d, "data.num_classes=3", f"out_dir={tmp_path / 'run3'}") == 1
    assert "labels span [0, 3] but the data set has 3 classes" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["kd", "rco"])
def test_beta_of_a_logit_method_is_a_config_error(tmp_path, capsys, method):
    code = main(["distill", f"out_dir={tmp_path / 's'}", "data=digits", "student=mlp", f"method={method}",
                 "method.beta=1", f"teacher.path={tmp_path / 't'}"])
    assert code == 2
    assert "method.beta: a logit-only method has no loss term of its own" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_an_absurd_data_parameter_stops_a_study_before_anything_trains(tmp_path, capsys):
    # issue 26: data.test_fraction=1e9 passed validation and every run of the study failed (exit 1)
    cfg = study_cfg(tmp_path / "study", seeds=(0,))
    cfg["data"] = {"name": "digits"}
    code, out, err = run(capsys, "study", write(tmp_path / "s.yaml", cfg), "data.test_fraction=1e9")
    assert code == 2, err
    assert err.startswith("kdlab: error: ") and err.count("\n") == 1, err
    assert "data.test_fraction: Input should be less than 1" in err
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("value", ["0", "-1"])
def test_workers_must_be_positive(tmp_path, capsys, value):
    (tmp_path / "s.yaml").write_text("name: x\nteacher: {model: resnet8, methods: {standard: standard}}\n"
                                     "student: {model: resnet8, methods: {alone: none}}\n")
    with pytest.raises(SystemExit) as e:
        main(["study", str(tmp_path / "s.yaml"), "--workers", value])
    assert e.value.code == 2 and "--workers: must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("out_dir, message", [("a\x00b", "cannot contain a NUL character"),
                                              ("x" * 300, "longer than 255 bytes")])
def test_unusable_out_dir_is_a_config_error(out_dir, message, capsys):
    assert main(["train-teacher", "data=digits", "model=mlp", f"out_dir={out_dir}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and len(err) < 300


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_named(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["train-teacher", "data=digits", "model=mlp", "train.epochs=1", f"out_dir={ro / 'run'}"]) == 1
    finally:
        ro.chmod(0o700)
    err = capsys.readouterr().err
    assert str(ro) in err and "internal error" not in err


def test_a_full_disk_is_named_and_loses_nothing(tmp_path, monkeypatch):
    """ENOSPC while a result is written: a one-line error naming the file, and the old file stays."""
    import errno

    from kdlab.core import checkpoint
    from kdlab.core.errors import StorageError

    target = RunFolder(tmp_path).summary_file
    target.write_text('{"top1": 1}')

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(StorageError, match=f"cannot write {target}: No space left on device"):
        checkpoint.atomic_write_text(target, '{"top1": 2}')
    assert target.read_text() == '{"top1": 1}' and not list(tmp_path.glob(".*.tmp"))


def test_a_folder_that_cannot_be_made_is_named(tmp_path, capsys, monkeypatch):
    """As a read-only parent folder does (root may write anywhere, so the refusal is simulated)."""
    import errno
    from pathlib import Path

    original = Path.mkdir

    def refuse(self, *a, **k):
        if "denied" in str(self):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return original(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", refuse)
    run = tmp_path / "denied" / "run"
    assert main(["train-teacher", "data=digits", "model=mlp", "train.epochs=1", "train.progress=off",
                 f"out_dir={run}"]) == 1
    err = capsys.readouterr().err
    assert "Permission denied" in err and str(tmp_path / "denied") in err and "internal error" not in err
