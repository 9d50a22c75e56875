"""Every planned run of a study is accounted for: a run that failed keeps its row in results.csv (status, reason,
no metrics), its cells in results.md and the report say so, and the headline names the incomplete method."""

import csv
import json

import numpy as np
import pytest

from kdlab.config import StudyConfig, load_config
from kdlab.core.errors import StudyFailedError
from kdlab.data import load_dataset
from kdlab.study.records import RunRecord, incomplete, load_study
from study_configs import study_cfg


def _nce_k_reason(cfg) -> str:
    """CRD's error on this data, its numbers counted here from the data itself."""
    data = load_dataset(load_config(StudyConfig, cfg).data, 0.0, 0)
    limit = int(len(data.train) - np.bincount(np.asarray(data.train.y)).max())
    return (f"method.nce_k: 16384 negatives requested but some samples have only {limit} samples of other classes "
            f"in this training set; set method.nce_k <= {limit}")


@pytest.fixture(scope="module")
def failed_study(tmp_path_factory):
    from kdlab.analysis.study_command import run_study

    out = tmp_path_factory.mktemp("failed") / "s"
    cfg = study_cfg(out, seeds=(0,))
    cfg["teacher"]["methods"] = {"standard": "standard"}
    cfg["student"]["methods"] = {"alone": "none", "kd": "kd", "crd": "crd"}  # crd's default nce_k: too many
    lines = []
    with pytest.raises(StudyFailedError, match=r"1 of 4 run\(s\) of the study failed") as caught:
        run_study(cfg, log=lines.append)
    return out, cfg, caught.value.result, lines


def test_results_csv_has_every_planned_run_with_its_status(failed_study):
    out, cfg, result, _ = failed_study
    rows = list(csv.DictReader((out / "results.csv").open()))
    planned = json.loads((out / "runs.json").read_text())["runs"]
    assert sorted(r["run_dir"] for r in rows) == sorted(e["run_dir"] for e in planned)
    crd = [r for r in rows if r["method_label"] == "crd"]
    assert len(crd) == 1 and crd[0]["status"] == "failed" and crd[0]["reason"] == _nce_k_reason(cfg)
    assert crd[0]["top1"] == "" and crd[0]["nll"] == "" and crd[0]["kind"] == "student"
    others = [r for r in rows if r["method_label"] != "crd"]
    assert {r["status"] for r in others} == {"finished"} and all(r["reason"] == "" and r["top1"] for r in others)
    assert [r.method_label for r in result.unfinished] == ["crd"]


def test_results_md_and_report_name_the_failed_method(failed_study):
    out, cfg, _, _ = failed_study
    headline = f"**Incomplete**: crd (1 of 1 runs failed: {_nce_k_reason(cfg)})."
    md = (out / "results.md").read_text()
    assert headline in md
    crd_row = next(line for line in md.splitlines() if line.startswith("| crd "))
    assert "failed [1]" in crd_row
    assert f"[1] crd: failed: {_nce_k_reason(cfg)}." in md
    report = (out / "report.html").read_text()
    assert "<strong>Incomplete</strong>: crd (1 of 1 runs failed: method.nce_k: 16384" in report
    assert "<td>failed [1]</td>" in report


def test_the_problem_is_printed_once_before_training(failed_study):
    _, cfg, _, lines = failed_study
    problems = [s for s in lines if s.startswith("problem: ")]
    assert len(problems) == 1 and problems[0].startswith(f"problem: {_nce_k_reason(cfg)} (1 run, e.g. ")
    assert lines.index(problems[0]) < next(i for i, s in enumerate(lines) if "top-1" in s)


def test_load_study_reads_the_failures_back(failed_study):
    out, cfg, _, _ = failed_study
    study = load_study(out)
    assert [(r.method_label, r.status, r.reason) for r in study.unfinished] == [("crd", "failed",
                                                                                 _nce_k_reason(cfg))]
    assert len(study.records) + len(study.unfinished) == study.planned == 4


def _rec(method, status, reason=None, kind="student"):
    return RunRecord(kind, None, "m", None, method, 0, run_dir=None, teacher_run_dir=None, status=status,
                     reason=reason)


def test_incomplete_counts_each_status_per_method():
    recs = [_rec("kd", "finished"), _rec("kd", "failed", "boom"), _rec("kd", "skipped", "t failed"),
            _rec("kd", "failed", "other"), _rec("alone", "finished"), _rec("wd0", "missing", "not run", "teacher")]
    assert incomplete(recs) == ["kd (3 of 4 runs did not finish: 2 failed: boom; 1 skipped: t failed)",
                                "teacher wd0 (1 of 1 runs missing: not run)"]


def test_a_failed_teacher_and_its_skipped_students_keep_their_cells():
    from kdlab.analysis.tables import distillation_table

    def rec(kind, method, teacher, status="finished", reason=None, top1=None):
        return RunRecord(kind, None if kind == "teacher" else "T--S", "T" if kind == "teacher" else "S", teacher,
                         method, 0, run_dir=None, teacher_run_dir=None,
                         metrics={} if top1 is None else {"top1": top1}, status=status, reason=reason)

    done = [rec("teacher", "std", "std", top1=70.0), rec("student", "kd", "std", top1=60.0)]
    unfinished = [rec("teacher", "wd0", "wd0", "failed", "out of memory"),
                  rec("student", "kd", "wd0", "skipped", "teachers/T/wd0/seed0 failed")]
    pair = {"teacher": "T", "student": "S", "key": "T--S"}
    table = distillation_table(done, pair, ["std", "wd0"], [], ["kd"], unfinished)
    cells = {r[0]: [c if isinstance(c, str) else c.text() for c in r[1:]] for r in table.rows
             if isinstance(r[0], str)}
    assert cells["Teacher T"] == ["70.00 (n=1)", "failed [1]"]
    assert cells["kd"] == ["60.00 (n=1)", "skipped [2]"]
    assert "[1] teacher wd0: failed: out of memory. [2] kd: skipped: teachers/T/wd0/seed0 failed." in table.notes()
    assert [r[1].text() for r in table.rows[-2:]] == ["60.00", "60.00"]  # Best, Average: from finished runs only
