"""The typed run summary declares every key a run writes, and its fields make the study's columns and the CLI's
printed keys."""

from __future__ import annotations

import json

import pytest

from conftest import student_cfg
from kdlab.analysis.study_command import METRIC_COLUMNS, TIMING_COLUMNS
from kdlab.core.errors import KdlabError
from kdlab.runs.folder import RunFolder
from kdlab.runs.student import distill
from kdlab.runs.summary import RunSummary


def test_every_key_a_teacher_and_a_student_write_is_declared(tmp_path, trained_teacher):
    student = distill(student_cfg(tmp_path / "s", trained_teacher.run_dir))
    for result in (trained_teacher, student):
        on_disk = json.loads(RunFolder(result.run_dir).summary_file.read_text())
        assert on_disk == result.summary
        assert RunSummary.from_dict(on_disk).to_dict() == on_disk  # every key declared, nothing added
    assert {"teacher_top1", "agreement", "group_size", "teacher_path"} <= set(student.summary)


def test_the_columns_and_printed_keys_come_from_the_declaration():
    assert METRIC_COLUMNS[:4] == ["top1", "top5", "nll", "ece"] and METRIC_COLUMNS[-1] == "run_dir"
    assert TIMING_COLUMNS == ["train_time", "group_size", "run_dir"]
    assert set(RunSummary.keys("printed")) <= set(METRIC_COLUMNS) | {"train_time"}
    assert "train_time" not in METRIC_COLUMNS  # it differs between executions: results.csv repeats byte for byte


def test_an_undeclared_key_is_an_error_and_unmeasured_keys_are_left_out():
    with pytest.raises(KdlabError, match="unknown key.*top_1"):
        RunSummary.from_dict({"top_1": 3.0})
    assert RunSummary(kind="teacher", top1=50.0).to_dict() == {"kind": "teacher", "top1": 50.0}
