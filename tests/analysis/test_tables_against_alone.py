"""Every table answers a reader's questions: each distilled student against the student alone (same seed), each
teacher's lead over the student alone, Holm's adjustment wherever a table holds several intervals, a reading that
says when distillation hurt; and the teacher-quality section without the distance to p* on data that have none."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from kdlab.analysis.correlation import correlation_table, plot_teacher_quality
from kdlab.analysis.stats import HOLM_MARK, holm, paired_difference
from kdlab.analysis.tables import alone_table, paired_table, reading, study_tables
from kdlab.study.records import RunRecord

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

PAIR = {"teacher": "T", "student": "S", "key": "T--S", "assistant": None}
SEEDS = range(5)


def _rec(kind, teacher, seed, top1, method=None, **metrics):
    pair = None if kind == "teacher" or method == "alone" else "T--S"
    arch = "T" if kind == "teacher" else "S"
    return RunRecord(kind, pair, arch, teacher, method or teacher, seed, Path(f"/r/{kind}/{teacher}/{method}/{seed}"),
                     None if kind == "teacher" or method == "alone" else Path(f"/r/teacher/{teacher}/{seed}"),
                     metrics={"top1": top1, **metrics})


ALONE = [70.0, 71.0, 70.5, 69.5, 70.8]
TEACH = {"a": [80.0, 81.0, 80.5, 79.0, 80.2], "b": [79.0, 80.1, 80.0, 79.5, 79.9]}
KD = {"a": [68.0, 69.5, 68.0, 68.1, 69.0],   # clearly below the student alone: distillation hurt
      "b": [70.5, 71.0, 71.5, 69.0, 71.0]}   # not clearly different
FT = {"a": [70.6, 71.4, 71.0, 70.1, 71.3],   # a small, consistent gain
      "b": [71.0, 72.0, 71.6, 70.0, 71.9]}


def _records():
    recs = [_rec("teacher", t, s, v[s], teacher_top1=v[s], teacher_ece=1.0) for t, v in TEACH.items() for s in SEEDS]
    recs += [_rec("student", None, s, ALONE[s], "alone") for s in SEEDS]
    for m, table in (("kd", KD), ("ft", FT)):
        recs += [_rec("student", t, s, v[s], m, teacher_top1=TEACH[t][s], teacher_ece=1.0 + 0.1 * s)
                 for t, v in table.items() for s in SEEDS]
    return recs


def test_holm_adjusts_a_family_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3p, then max(2p, 3p_1), then 1p
    assert holm([0.5, float("nan"), 0.01]) == pytest.approx([0.5, float("nan"), 0.02], nan_ok=True)
    d = [1.0, 1.5, 0.8, 1.2]
    assert paired_difference([(0.0, x) for x in d]).p_value == pytest.approx(stats.ttest_1samp(d, 0).pvalue)


def test_each_distilled_student_and_teacher_is_compared_with_the_student_alone():
    table = alone_table(_records(), PAIR, ["a", "b"], "alone", ["kd", "ft"])
    assert table.header == ["minus the student alone", "a", "b"]
    assert [r[0] for r in table.rows] == ["teacher top-1", "kd student top-1", "ft student top-1"]
    for row, values in zip(table.rows, (TEACH, KD, FT)):
        for ci, t in zip(row[1:], ("a", "b")):
            d = np.subtract(values[t], ALONE)
            lo, hi = stats.t.interval(0.95, 4, loc=d.mean(), scale=stats.sem(d))
            assert (ci.interval.estimate, ci.interval.low, ci.interval.high) == pytest.approx((d.mean(), lo, hi))
    kd_a, kd_b = table.rows[1][1].interval, table.rows[1][2].interval
    assert kd_a.verdict == "lower" and kd_b.verdict == "not significant"
    # six intervals: Holm's adjusted p of each is its own p times its rank's factor, made monotone
    cells = [c for r in table.rows for c in r[1:]]
    assert [c.holm_p for c in cells] == pytest.approx(holm([c.interval.p_value for c in cells]))
    assert "6 intervals in this table" in table.to_markdown() and "Holm" in table.to_markdown()
    lost = [c for c in cells if c.interval.excludes_zero and c.holm_p >= 0.05]
    assert all(c.text().endswith(HOLM_MARK) for c in lost)
    assert all(not c.text().endswith(HOLM_MARK) for c in cells if c not in lost)
    by = {(r["row"], r["column"]): r for r in csv.DictReader(io.StringIO(table.to_csv()))}
    assert float(by[("kd student top-1", "a")]["holm_p"]) == pytest.approx(table.rows[1][1].holm_p)


def test_a_marginal_gain_loses_its_mark_under_holm_but_not_its_interval():
    # one interval that just excludes 0 among several clear ones: significant alone, not as one of a family
    recs = _records()
    ft = [r for r in recs if r.method_label == "ft" and r.teacher_label == "a"]
    for r, v in zip(sorted(ft, key=lambda r: r.seed), [70.5, 71.0, 70.9, 69.8, 71.0]):
        r.metrics["top1"] = v
    table = alone_table(recs, PAIR, ["a", "b"], "alone", ["kd", "ft"])
    cell = table.rows[2][1]
    assert cell.interval.excludes_zero and cell.interval.p_value < 0.05 <= cell.holm_p
    assert cell.text().endswith(f"(n=5) {HOLM_MARK}")
    assert "1 difference whose interval excludes 0 but not significant" in table.to_markdown()


def test_the_reading_says_when_distillation_hurt_and_when_it_helped():
    recs = _records()
    doc = study_tables(recs, [PAIR], ["a", "b"], ["alone"], ["kd", "ft"], "caption")
    text = [b for b in doc if getattr(b, "lead", None) == "Reading"][0].text
    assert "The kd student of the a teacher against the student alone: top-1 lower by 1.84 [" in text
    assert "]: distillation hurt." in text
    assert "The kd student of the b teacher against the student alone: top-1 not significantly different" in text
    assert "The ft student of the b teacher against the student alone: top-1 higher by 0.94 [" in text
    assert "distillation helped" in text
    assert "The b teacher against the a teacher:" in text  # the teacher methods' comparison still comes first
    titles = [t.title for t in doc.tables]
    assert any(t.startswith("Paired differences to the student trained alone (alone)") for t in titles)
    paired = paired_table(recs, PAIR, ["a", "b"], ["kd", "ft"])
    assert "intervals in this table" in paired.to_markdown()
    assert reading(None, "a", None) is None


def test_a_study_without_a_student_alone_or_teachers_has_no_such_table():
    recs = [r for r in _records() if r.method_label != "alone"]
    assert alone_table(recs, PAIR, ["a", "b"], "alone", ["kd"]) is None
    assert alone_table(_records(), PAIR, [], "alone", []) is None


def test_teacher_quality_on_data_without_p_star_leaves_the_distance_out_with_one_line(tmp_path):
    recs = _records()
    table = correlation_table(recs, "kd")
    names = [r[0] for r in table.rows]
    assert names == ["teacher test top-1 %", "teacher test ECE %"]  # no row of n=0
    assert "left out: the data have no known p*" in table.note
    assert "trained teachers only" not in table.header  # no checkpoint students: the column would repeat
    out = plot_teacher_quality(recs, tmp_path / "tq.png", "kd")
    from PIL import Image

    w, h = Image.open(out).size
    assert w < 1.5 * h  # one panel, not two
