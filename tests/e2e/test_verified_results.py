"""A study reuses a finished run only when its results match the checksums written when it finished; damaged
results are recomputed from the run's final checkpoint, or named with the way to fix them."""

import csv
import json
import shutil

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


# -- a reused run is proven to be the run (issue 26) ------------------------------------------------------------

def _two_seed_study(out):
    return {**_study(out), "seeds": [0, 1], "student": {"model": "resnet8", "methods": {"kd": "kd"},
                                                         "train": dict(TINY_TRAIN)}}


def _teacher_dirs(out):
    dirs = sorted(p.parent for p in (out / "teachers").rglob(SUMMARY))
    assert len(dirs) == 2 and dirs[0].name.endswith("0") and dirs[1].name.endswith("1"), dirs
    return dirs


def _restore_over(src, dst):
    """What a wrong backup restore does: every file of ``src`` but its config.yaml copied over ``dst``'s."""
    shutil.rmtree(dst / "checkpoints")
    shutil.copytree(src / "checkpoints", dst / "checkpoints")
    for name in (SUMMARY, "test_logits.npy", "test_labels.npy", "metrics.jsonl", "checksums.json"):
        shutil.copy2(src / name, dst / name)


def _teacher_rows(out):
    return [r for r in csv.DictReader((out / "results.csv").open()) if r["kind"] == "teacher"]


def test_another_runs_files_restored_over_a_finished_teacher_are_refused_by_name(tmp_path):
    out = tmp_path / "s"
    run_study(_two_seed_study(out), log=lambda s: None)
    s0, s1 = _teacher_dirs(out)
    top1 = {row["seed"]: row["top1"] for row in _teacher_rows(out)}
    _restore_over(s1, s0)
    res = run_study(_two_seed_study(out), log=lambda s: None, allow_failures=True)
    assert len(res.failed) >= 1 and str(s0) in res.failed[0], res.failed
    assert "another run" in res.failed[0] and "seed: 1 -> 0" in res.failed[0], res.failed[0]
    rows = {row["seed"]: row for row in _teacher_rows(out)}
    assert rows["1"]["status"] == "finished" and rows["1"]["top1"] == top1["1"]
    # the seed-0 teacher is reported as failed, with its reason and without seed 1's (or any) numbers
    assert rows["0"]["status"] == "failed" and "another run" in rows["0"]["reason"] and rows["0"]["top1"] == ""


def test_results_without_checksums_are_recomputed_from_the_final_checkpoint(tmp_path, capsys):
    cfg = teacher_cfg(tmp_path / "t")
    true = train_teacher(cfg).summary
    folder = RunFolder(tmp_path / "t")
    logits = np.load(folder.test_logits_file)
    edited = {**true, "top1": true["top1"] + 10}
    folder.summary_file.write_text(json.dumps(edited))
    np.save(folder.test_logits_file, np.zeros_like(logits))
    folder.manifest_file.unlink()
    again = train_teacher(cfg, resume=True)
    assert not again.reused and again.summary["top1"] == true["top1"]
    assert np.array_equal(np.load(folder.test_logits_file), logits)
    assert "checksums.json is missing" in capsys.readouterr().err


def test_results_without_checksums_or_a_checkpoint_are_refused_by_name(tmp_path):
    cfg = teacher_cfg(tmp_path / "t")
    train_teacher(cfg)
    RunFolder(tmp_path / "t").manifest_file.unlink()
    shutil.rmtree(tmp_path / "t" / "checkpoints")
    with pytest.raises(RunFolderError, match="checksums.json is missing.*no checkpoint to recompute"):
        train_teacher(cfg, resume=True)


def _flip_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(raw)


@pytest.mark.parametrize("damage", ["flip last", "flip best", "flip prev", "delete last", "other seed's last"])
def test_damaged_checkpoints_of_a_finished_teacher_are_named_when_it_is_reused(tmp_path, damage):
    cfg = teacher_cfg(tmp_path / "t")
    train_teacher(cfg)
    ck = tmp_path / "t" / "checkpoints"
    action, name = damage.rsplit(" ", 1)
    if action == "flip":
        _flip_byte(ck / f"{name}.pt")
    elif action == "delete":
        (ck / f"{name}.pt").unlink()
    else:
        train_teacher(teacher_cfg(tmp_path / "t1", seed=1))
        shutil.copy2(tmp_path / "t1" / "checkpoints" / "last.pt", ck / "last.pt")
    with pytest.raises(RunFolderError, match=f"checkpoints/{name}.pt"):
        train_teacher(cfg, resume=True)


def test_an_earlier_epochs_checkpoint_in_place_of_the_last_is_refused_to_students(tmp_path, capsys):
    """prev.pt copied over last.pt passes every check but the run's checksums: same config, intact, other weights."""
    train_teacher(teacher_cfg(tmp_path / "t"))
    ck = tmp_path / "t" / "checkpoints"
    shutil.copy2(ck / "prev.pt", ck / "last.pt")
    code = main(["distill", f"out_dir={tmp_path / 's'}", f"teacher.path={tmp_path / 't'}", "student=resnet8",
                 "method=kd", *(f"data.{k}={v}" for k, v in TINY_DATA.items()),
                 *(f"train.{k}={v}" for k, v in TINY_TRAIN.items())])
    err = capsys.readouterr().err
    assert code == 1 and "last.pt no longer matches the checksum its run wrote" in err, err
    with pytest.raises(RunFolderError, match="checkpoints/last.pt no longer matches the run's checksums"):
        train_teacher(teacher_cfg(tmp_path / "t"), resume=True)


def test_a_study_report_refuses_results_without_checksums(tmp_path, capsys):
    out = tmp_path / "s"
    run_study(_study(out), log=lambda s: None, report=False)
    RunFolder(_student_dir(out)).manifest_file.unlink()
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "has no readable checksums.json" in err and "rerun the study" in err and err.count("\n") == 1


def test_a_dry_run_says_which_finished_runs_would_be_refused_or_recomputed(tmp_path, capsys):
    out = tmp_path / "s"
    run_study(_study(out), log=lambda s: None, report=False)
    kd = _student_dir(out)
    RunFolder(kd).manifest_file.unlink()
    (teacher,) = [p.parent for p in (out / "teachers").rglob(SUMMARY)]
    _flip_byte(teacher / "checkpoints" / "best.pt")
    assert main(["study", str(out / "study.yaml"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "# dry run: 3 runs (3 finished)" in text
    assert f"{teacher}  (finished: refused: {teacher}: checkpoints/best.pt" in text
    assert f"{kd}  (finished: results recomputed from its final checkpoint)" in text
