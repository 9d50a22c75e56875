import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli_run import run, write
from conftest import TINY_DATA, teacher_cfg
from kdlab.cli.main import main
from kdlab.runs.folder import RunFolder


@pytest.mark.fast
def test_every_subcommand_has_help(capsys):
    for cmd in ["train-teacher", "distill", "study", "eval", "list", "quickstart"]:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: kdlab " + cmd in capsys.readouterr().out


def test_train_distill_eval_end_to_end(tmp_path, capsys):
    tcfg = write(tmp_path / "t.yaml", teacher_cfg(tmp_path / "teacher"))
    code, out, _ = run(capsys, "train-teacher", tcfg, "train.epochs=1", "seed=1")
    assert code == 0 and "top1" in out
    assert RunFolder(tmp_path / "teacher").summary_file.exists()
    code, out, _ = run(capsys, "distill", "data.name=mixed-feature", f"data.num_train={TINY_DATA['num_train']}",
                       f"data.num_test={TINY_DATA['num_test']}", "student=resnet8", "method.T=2",
                       f"teacher.path={tmp_path / 'teacher'}", "train.epochs=1", "train.progress=off",
                       f"out_dir={tmp_path / 'student'}")
    assert code == 0 and "agreement" in out
    summary = json.loads(RunFolder(tmp_path / "student").summary_file.read_text())
    assert summary["method"] == "kd" and 0 <= summary["agreement"] <= 100
    code, out, _ = run(capsys, "eval", tmp_path / "student", f"teacher.path={tmp_path / 'teacher'}", "--json")
    res = json.loads(out)
    assert code == 0 and res["top1"] == pytest.approx(summary["top1"]) and res["agreement"] == summary["agreement"]
    code, out, _ = run(capsys, "eval", tmp_path / "teacher" / "checkpoints" / "last.pt")
    assert code == 0 and "top1" in out


def test_study_and_quickstart_tiny(tmp_path, capsys):
    """The quickstart as a user runs it (its default workers: one process per core, one thread each), then the
    same again in another folder: results.csv repeats byte for byte on one machine."""
    shrink = ["seeds=[0, 1, 2]", f"data.num_train={TINY_DATA['num_train']}", f"data.num_test={TINY_DATA['num_test']}",
              "teacher.train.epochs=1", "student.train.epochs=1", "teacher.train.progress=off",
              "student.train.progress=off"]
    code, out, err = run(capsys, "quickstart", f"out_dir={tmp_path / 'qs'}", *shrink)
    assert code == 0
    header = next(ln for ln in out.splitlines() if ln.startswith("|"))
    assert [c.strip() for c in header.split("|")[2:-1]] == ["standard", "soteacher"]
    assert "| Teacher resnet8" in out and "| Student mlp(hidden=[6]) (alone)" in out and "| kd " in out
    assert "fashion-mnist: seeds [0, 1, 2]" in out and "L1 to p*" not in out.split("Teacher quality")[1][:400]
    assert "(n=3)" in out and "**Reading**" in out and "minus the student alone" in out
    assert "against the student alone: top-1" in out
    assert "15 runs trained, 0 reused, 0 failed" in err  # 3 x 2 teachers, 3 alone, 3 x 2 KD students
    code, out2, err = run(capsys, "study", tmp_path / "qs" / "study.yaml")
    assert code == 0 and "0 runs trained, 15 reused" in err
    assert out2 == out
    code, out3, _ = run(capsys, "quickstart", f"out_dir={tmp_path / 'again'}", *shrink)
    results = [(tmp_path / d / "results.csv").read_bytes() for d in ("qs", "again")]
    assert code == 0 and results[0] == results[1] and out3 == out
    assert "train_time" not in results[0].decode() and b"train_time" in (tmp_path / "qs" / "timings.csv").read_bytes()
    # the mixed-feature lab: three teacher methods and the distances to p*
    code, out, err = run(capsys, "quickstart", "--lab", f"out_dir={tmp_path / 'lab'}", *shrink[1:], "seeds=[0]")
    header = next(ln for ln in out.splitlines() if ln.startswith("|"))
    assert code == 0 and [c.strip() for c in header.split("|")[2:-1]] == ["standard", "soteacher", "sftn"]
    assert "mixed-feature: seeds [0]" in out and "L1 to p* (train)" in out and "7 runs trained" in err


@pytest.mark.parametrize("argv, code, fragment", [
    (["train-teacher", "data.name=digits", "model.name=resnt8"], 2, "model.name: unknown model 'resnt8'; did you mean"),
    (["train-teacher", "data.name=digits", "model=resnet8", "optim.lr=fast"], 2, "optim.lr: Input should be a valid"),
    (["train-teacher", "data.name=digits", "model=resnet8", "optim.lrate=1"], 2, "optim.lrate: unknown key"),
    (["distill", "data.name=digits", "student=resnet8"], 2, "teacher: method 'kd' needs a teacher"),
    (["distill", "data.name=digits", "student=resnet8", "method=none", "method.T=3"], 2, "method.T: unknown key"),
    (["study", "missing.yaml"], 2, "config file not found: missing.yaml"),
    (["train-teacher", "data=arrays", "data.root=/nonexistent/folder", "model=mlp"], 1,
     "data.root: folder /nonexistent/folder not found"),
    (["eval", "/nonexistent/run"], 1, "checkpoint or run folder not found"),
    (["train-teacher", "data=digits", "model=cnn1d"], 2, "model 'cnn1d' takes sequence inputs"),
    (["train-teacher", "data=digits", "model={name: mlp, hidden: [0]}"], 2,
     "model.hidden.0: Input should be greater than 0"),
    (["train-teacher", "data=digits", "model=mlp", "train.device=gpu"], 2, "train.device: Value error, device"),
    (["eval", "/nonexistent/run", "device=foo"], 2, "device: Value error, device must be auto"),
    (["train-teacher", "data=digits", "model=mlp", "out_dir=afile"], 1, "out_dir afile is a file, not a folder"),
])
@pytest.mark.fast
def test_bad_input_gives_one_line_and_exit_code(capsys, argv, code, fragment):
    Path("afile").write_text("")  # a file where a run folder may be asked for
    got, out, err = run(capsys, *argv)
    assert got == code
    assert fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not Path("runs").exists()  # a run that cannot start leaves nothing behind


def test_mismatched_and_unreadable_teacher_checkpoints(tmp_path, capsys, trained_teacher):
    tdir = trained_teacher.run_dir
    # class-count mismatch: the teacher has 10 classes, this data set 4
    code, _, err = run(capsys, "distill", "data.name=mixed-feature", "data.num_classes=4", "data.num_train=64",
                       "student=resnet8", f"teacher.path={tdir}", f"out_dir={tmp_path / 's1'}")
    assert code == 1 and "predicts 10 classes but data set 'mixed-feature' has 4" in err
    assert not (tmp_path / "s1").exists()  # nothing half-made
    code, _, err = run(capsys, "distill", "data=mixed-feature", "data.num_train=64", "student=resnet8",
                       f"teacher.path={tdir}", "teacher.checkpoint=epoch_099", f"out_dir={tmp_path / 's2'}")
    assert code == 1 and "has no checkpoint 'epoch_099' (available: best, epoch_001, epoch_002, last, prev)" in err
    # wrong architecture stored under the right name: the state dict does not fit
    from kdlab.core.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(tdir / "checkpoints" / "last.pt")
    ck["model"]["name"] = "resnet20"
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, ck)
    code, _, err = run(capsys, "eval", bad)
    assert code == 1 and "does not match model 'resnet20'" in err
    bad.write_bytes(bad.read_bytes()[:1000])
    code, _, err = run(capsys, "eval", bad)
    assert code == 1 and "corrupted or truncated" in err


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in ["resnet32x4", "wrn_40_2", "cnn1d", "mlp", "standard", "kd", "none", "digits", "mnist1d",
                 "mixed-feature", "7.43M"]:
        assert name in out
    code, out, _ = run(capsys, "list", "datasets")
    assert code == 0 and "mnist1d" in out and "resnet8" not in out


def test_train_teacher_refuses_to_overwrite(tmp_path, capsys, trained_teacher):
    tdir = trained_teacher.run_dir
    cfg = write(tmp_path / "t.yaml", yaml.safe_load((tdir / "config.yaml").read_text()))
    code, _, err = run(capsys, "train-teacher", cfg)
    assert code == 1 and "already holds a finished run" in err
    code, out, _ = run(capsys, "train-teacher", cfg, "--resume")
    assert code == 0 and "already finished" in out


@pytest.mark.fast
def test_ci_runs_the_readme_test_command():
    root = Path(__file__).resolve().parents[2]
    readme, ci = (root / "README.md").read_text(), (root / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && pytest -q' in readme and "pip install -e . && kdlab quickstart" in readme
    assert 'pip install -q -e ".[test]"' in ci and "\npytest -q\n" in ci and "ruff check ." in ci


def test_output_into_a_closed_pipe_is_not_an_error():
    # the reader is gone before kdlab writes (it takes a second to import torch): `kdlab list | head` style
    proc = subprocess.Popen([sys.executable, "-m", "kdlab", "list", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "error" not in err, err


def test_the_command_finds_the_distributed_module_of_a_torchrun_job():
    """entry() leaves a torchrun job's process group and skips the interpreter's teardown through this lookup."""
    import kdlab.core.distributed
    from kdlab.cli.main import _distributed_module

    assert _distributed_module() is kdlab.core.distributed
