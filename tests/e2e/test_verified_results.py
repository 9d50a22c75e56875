"""A study reuses a finished run only when its results match the checksums written when it finished; damaged
results are recomputed from the run's final checkpoint, or named with the way to fix them."""

import csv
import json

import numpy as np
import pytest

from conftest import TINY_DATA, TINY_TRAIN, teacher_cfg
from kdlab.analysis.study_command import run_study
from kdlab.cli.main import main
from kdlab.core.errors import RunFolderError
from kdlab.runs.folder import SUMMARY, RunFolder
from kdlab.runs.teacher import train_teacher


def _study(out):
    return {"name": "verified", "out_dir": str(out), "seeds": [0], "data": dict(TINY_DATA),
            "teacher": {"model": "resnet8", "methods": {"standard": "standard"}, "train": dict(TINY_TRAIN)},
            "student": {"model": "resnet8", "methods": {"kd": "kd", "alone": "none"}, "train": dict(TINY_TRAIN)}}


def _student_dir(out):
    (d,) = [p.parent for p in (out / "students").rglob(SUMMARY) if "kd" in p.parts]
    return d


def test_an_edited_summary_is_recomputed_not_reused(tmp_path, capsys):
    out = tmp_path / "s"
    first = run_study(_study(out), log=lambda s: None)
    kd = _student_dir(out)
    true_top1 = json.loads(RunFolder(kd).summary_file.read_text())["top1"]
    edited = json.loads(RunFolder(kd).summary_file.read_text())
    edited["top1"] = true_top1 + 10
    RunFolder(kd).summary_file.write_text(json.dumps(edited))
    again = run_study(_study(out), log=lambda s: None)
    assert "summary.json no longer matches the run's checksums" in capsys.readouterr().err
    rows = {r["method_label"]: float(r["top1"]) for r in csv.DictReader((out / "results.csv").open()) if r["kind"] ==
            "student"}
    assert rows["kd"] == true_top1 and json.loads(RunFolder(kd).summary_file.read_text())["top1"] == true_top1
    assert again.ran == 1 and again.reused == first.ran - 1


def test_scrambled_logits_are_recomputed(tmp_path):
    out = tmp_path / "s"
    run_study(_study(out), log=lambda s: None)
    kd = _student_dir(out)
    good = np.load(kd / "test_logits.npy")
    rng = np.random.default_rng(0)
    np.save(kd / "test_logits.npy", rng.permutation(good.ravel()).reshape(good.shape))
    run_study(_study(out), log=lambda s: None)
    assert np.array_equal(np.load(kd / "test_logits.npy"), good)


def test_report_names_the_damaged_file_and_the_fix(tmp_path, capsys):
    out = tmp_path / "s"
    run_study(_study(out), log=lambda s: None, report=False)
    kd = _student_dir(out)
    raw = bytearray((kd / "test_logits.npy").read_bytes())
    raw[-3] ^= 0x55
    (kd / "test_logits.npy").write_bytes(raw)
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "test_logits.npy does not match the run's checksums" in err and "rerun the study" in err
    assert err.count("\n") == 1


def test_damaged_results_without_a_checkpoint_are_named(tmp_path):
    cfg = teacher_cfg(tmp_path / "t")
    train_teacher(cfg)
    RunFolder(tmp_path / "t").summary_file.write_text("{not json")
    for f in (tmp_path / "t" / "checkpoints").glob("*.pt"):
        f.unlink()
    with pytest.raises(RunFolderError, match="summary.json no longer matches the run's checksums"):
        train_teacher(cfg, resume=True)


@pytest.mark.parametrize("content", ["", "\xff\xfe garbage", "[1, 2]"])
def test_a_damaged_run_config_fails_that_run_alone(tmp_path, content):
    out = tmp_path / "s"
    run_study(_study(out), log=lambda s: None)
    kd = _student_dir(out)
    (kd / "config.yaml").write_bytes(content.encode("latin-1"))
    res = run_study(_study(out), log=lambda s: None, allow_failures=True)
    assert len(res.failed) == 1 and "config.yaml is" in res.failed[0] and "damaged" in res.failed[0]
    assert res.reused == 2  # the others go on
