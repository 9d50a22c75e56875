"""The teacher-quality study: each student records its teacher's (or teacher checkpoint's) measures, and the
Spearman correlations of student accuracy with them, with bootstrap intervals, as a table and a figure."""

import json
import math

import numpy as np
import pytest

from figure_study import tiny_study
from kdlab.analysis.correlation import (
    MIN_STUDENTS,
    average_ranks,
    bootstrap_ci,
    correlation_table,
    correlations,
    distill_method,
    distilled_students,
    plot_teacher_quality,
    spearman,
)
from kdlab.study.records import load_study

PNG = b"\x89PNG\r\n\x1a\n"
TEACHER_KEYS = {"teacher_top1": "top1", "teacher_nll": "nll", "teacher_ece": "ece",
                "teacher_pstar_l1_train": "pstar_l1_train", "teacher_pstar_l1_test": "pstar_l1_test"}


def test_spearman_with_ties_by_hand():
    x, y = [1, 2, 2, 3, 4], [2, 1, 3, 3, 5]
    rx, ry = average_ranks(x), average_ranks(y)
    assert rx.tolist() == [1, 2.5, 2.5, 4, 5] and ry.tolist() == [2, 1, 3.5, 3.5, 5]
    # centred ranks: dx = (-2, -.5, -.5, 1, 2), dy = (-1, -2, .5, .5, 2); sum dx dy = 7.25, sum dx^2 = sum dy^2 = 9.5
    assert spearman(x, y) == pytest.approx(7.25 / 9.5)
    assert spearman(x, [-v for v in y]) == pytest.approx(-7.25 / 9.5)
    assert math.isnan(spearman(x, [3, 3, 3, 3, 3]))


def test_spearman_equals_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.integers(0, 6, 15).astype(float)  # many ties
        y = x + rng.normal(0, 2, 15).round()
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_bootstrap_interval_is_reproducible_and_holds_the_estimate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=1.0, size=30)
    rho = spearman(x, y)
    low, high = bootstrap_ci(x, y)
    assert -1 <= low < rho < high <= 1
    assert bootstrap_ci(x, y) == (low, high)
    assert bootstrap_ci(x, y, seed=1) != (low, high)


def test_a_monotone_relation_has_rho_one_and_interval_one():
    x = np.array([1, 2, 2, 3, 5, 8, 9, 9, 12, 20.0])
    y = np.exp(x / 4)  # strictly increasing in x, ties where x ties
    assert spearman(x, y) == pytest.approx(1.0)
    assert bootstrap_ci(x, y) == pytest.approx((1.0, 1.0))
    assert bootstrap_ci(x, -y) == pytest.approx((-1.0, -1.0))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory)


def test_students_record_their_teachers_measures_from_the_teachers_own_runs(study):
    records = load_study(study).records
    by_dir = {r.run_dir: r for r in records}
    students = [r for r in records if r.kind == "student" and r.teacher_run_dir is not None]
    last = [r for r in students if r.trajectory_epoch in (None, 2)]  # checkpoint "last" or epoch_002 (of 2)
    assert len(last) > 10
    for r in last:
        teacher = by_dir[r.teacher_run_dir]
        for mine, own in TEACHER_KEYS.items():  # the same numbers from the teacher's run and the student's
            assert r.metrics[mine] == pytest.approx(teacher.metrics[own], rel=1e-6, abs=1e-9), (r.run_dir, mine)
    for r in students:
        if r.trajectory_epoch == 1:  # the checkpoint's measures, not the finished teacher's
            log = [json.loads(line) for line in (r.teacher_run_dir / "metrics.jsonl").read_text().splitlines()]
            assert r.metrics["teacher_top1"] == pytest.approx(log[0]["test_top1"])


def test_the_study_reports_the_correlations_and_draws_the_figure(study, tmp_path):
    records = load_study(study).records
    assert distill_method(records) == "kd"
    students = distilled_students(records)
    # kd from 2 teacher methods + the sweep's teacher variant, and kd@1 from the 2 trajectory teachers; the plain kd
    # student is the trajectory's point at the teachers' last epoch (no kd@2 run): counted once
    assert len(students) == 10 and sum(r.from_checkpoint for r in students) == 4
    assert {r.method_label for r in students} == {"kd", "kd@1"}
    assert not any(r.method_label == "kd@2" for r in records)
    assert sum(r.trajectory_epoch == 2 for r in students) == 4
    corr = {c.measure: c for c in correlations(records)}
    assert list(corr) == ["teacher_top1", "teacher_pstar_l1_train", "teacher_pstar_l1_test", "teacher_ece"]
    for key, c in corr.items():
        assert c.n == 10
        xs = [r.metrics[key] for r in students]
        assert c.rho == pytest.approx(spearman(xs, [r.metrics["top1"] for r in students]))
    table = correlation_table(records)
    assert [row[0] for row in table.rows][:2] == ["teacher test top-1 %", "teacher L1 to p* (training inputs)"]
    assert table.rows[0][1].value == corr["teacher_top1"].rho and table.rows[0][4] == "10"
    assert correlation_table(records).to_markdown() == table.to_markdown()  # a fixed bootstrap seed
    assert correlation_table(records, method="kdT2") is None  # 4 students
    assert (study / "figures" / "teacher-quality.png").read_bytes()[:8] == PNG
    report = (study / "report.md").read_text()
    assert "Spearman correlation of the kd student's test top-1" in report
    assert "](figures/teacher-quality.png)" in report
    out = plot_teacher_quality(records, tmp_path / "tq.png")
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 1024
    few = [r for r in records if r not in students[MIN_STUDENTS - 1:]]
    assert plot_teacher_quality(few, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_partial_spearman_is_the_partial_correlation_of_the_ranks():
    from kdlab.analysis.correlation import partial_spearman

    rng = np.random.default_rng(4)
    z = rng.standard_normal(40)
    x = z + 0.5 * rng.standard_normal(40)
    y = z + 0.5 * rng.standard_normal(40)
    rxy, rxz, ryz = spearman(x, y), spearman(x, z), spearman(y, z)
    formula = (rxy - rxz * ryz) / np.sqrt((1 - rxz ** 2) * (1 - ryz ** 2))
    assert partial_spearman(x, y, z) == pytest.approx(formula, abs=1e-12)
    assert rxy > 0.5 and abs(partial_spearman(x, y, z)) < 0.35  # x and y are related only through z
    assert partial_spearman(x, x + 0.01 * z, z) > 0.9
