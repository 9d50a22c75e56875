"""Differences between teacher methods: paired over seeds, with a 95 % t interval from 3 pairs on, marked n.s.
when the interval covers 0, in every table that shows one, and the reading that follows from the marks."""

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from kdlab.analysis.document import Difference, Stat
from kdlab.analysis.stats import Interval, difference_interval, paired_difference
from kdlab.analysis.tables import distillation_table, paired_table, reading, study_tables
from kdlab.study.records import RunRecord

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

PAIR = {"teacher": "T", "student": "S", "key": "T--S", "assistant": None}


def _t_interval(d):
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=stats.sem(d))
    return float(np.mean(d)), lo, hi


def test_an_interval_that_covers_zero_is_marked_and_one_from_two_pairs_is_not_given():
    sig = paired_difference([(70.0, 72.0), (71.0, 72.5), (69.0, 71.5)])
    est, lo, hi = _t_interval([2.0, 1.5, 2.5])
    assert (sig.estimate, sig.low, sig.high) == pytest.approx((est, lo, hi))
    assert sig.verdict == "higher" and sig.difference_text() == f"+2.00 [{lo:+.2f}, {hi:+.2f}] (n=3)"
    ns = paired_difference([(70.0, 71.0), (71.0, 70.0), (69.0, 69.5)])
    assert ns.low < 0 < ns.high and ns.verdict == "not significant" and ns.difference_text().endswith(" n.s.")
    assert paired_difference([(1.0, 0.0), (2.0, 0.5), (3.0, 1.0)]).verdict == "lower"
    two = paired_difference([(70.0, 72.0), (71.0, 72.5)])  # t(1) = 12.7: no interval is given
    assert two.n == 2 and math.isnan(two.low) and two.verdict == "too few seeds"
    assert two.difference_text() == "+1.75 (n=2: too few seeds for an interval)"
    assert Interval(math.nan, math.nan, math.nan, 0).verdict == "no pairs"
    assert difference_interval([0.3, None, float("nan"), 0.1]).n == 2


def _rec(kind, teacher, seed, top1, method=None, **metrics):
    pair = None if kind == "teacher" or method == "alone" else "T--S"
    arch = "T" if kind == "teacher" else "S"
    return RunRecord(kind, pair, arch, teacher, method or teacher, seed, Path(f"/r/{kind}/{teacher}/{method}/{seed}"),
                     None, metrics={"top1": top1, **metrics})


# seed 3 of "b" has no baseline run: it is in b's mean but not in any pair
TEACHERS = {"a": [76.0, 75.0, 77.0], "b": [77.0, 75.5, 79.0, 90.0], "c": [76.5, 74.0, 77.0]}
KD = {"a": [74.0, 73.0, 75.0], "b": [75.5, 74.0, 76.0, 85.0], "c": [75.0, 72.0, 75.5]}


def _records():
    recs = [_rec("teacher", t, s, v, pstar_l1_train=0.5 - 0.01 * s) for t, vs in TEACHERS.items()
            for s, v in enumerate(vs)]
    recs += [_rec("student", None, s, v, "alone") for s, v in enumerate([70.0, 71.0, 70.5])]
    recs += [_rec("student", t, s, v, "kd") for t, vs in KD.items() for s, v in enumerate(vs)]
    return recs


def test_the_distillation_table_shows_each_difference_paired_over_seeds_with_its_interval():
    table = distillation_table(_records(), PAIR, ["a", "b", "c"], ["alone"], ["kd"])
    kd_b = table.rows[2][2]
    est, lo, hi = _t_interval([1.5, 1.0, 1.0])  # seeds 0-2 only: seed 3 has no pair
    assert kd_b.n == 4 and kd_b.mean == pytest.approx(np.mean(KD["b"]))  # the cell's own mean: all its runs
    assert (kd_b.difference.estimate, kd_b.difference.low, kd_b.difference.high) == pytest.approx((est, lo, hi))
    assert kd_b.delta != pytest.approx(kd_b.mean - table.rows[2][1].mean)  # not the difference of the means
    assert kd_b.text().endswith(f"(+{est:.2f} [{lo:+.2f}, {hi:+.2f}] (n=3))")  # n of the pairs, as it is not 4
    kd_c = table.rows[2][3]
    assert kd_c.difference.verdict == "not significant" and kd_c.text().endswith(" n.s.)")
    assert table.rows[0][1].difference is None and table.rows[1][2].difference is None  # baseline, alone
    assert "n.s.: not significant" in table.to_markdown()
    by = {(r["row"], r["column"]): r for r in csv.DictReader(io.StringIO(table.to_csv()))}
    row = by[("kd", "b")]
    assert float(row["delta"]) == pytest.approx(est) and float(row["low"]) == pytest.approx(lo)
    assert row["verdict"] == "higher" and by[("kd", "c")]["verdict"] == "not significant"
    assert by[("kd", "a")]["verdict"] == ""


def test_the_reading_says_only_what_the_intervals_support():
    recs = _records()
    paired = paired_table(recs, PAIR, ["a", "b", "c"], ["kd"])
    kd = paired.header.index("kd student top-1")
    assert [row[kd].interval.verdict for row in paired.rows] == ["higher", "not significant"]
    text = reading(paired, "a").text
    assert "The b teacher against the a teacher:" in text and "The c teacher against the a teacher:" in text
    b_part, c_part = text.split("The c teacher")
    assert "kd student top-1 higher by 1.17 [" in b_part
    assert "kd student top-1 not significantly different (" in c_part and "higher by" not in c_part.split(";")[-1]
    assert "n.s." in paired.to_markdown()
    two = [r for r in recs if r.seed < 2]
    paired2 = paired_table(two, PAIR, ["a", "b", "c"], ["kd"])
    assert "too few for an interval" in reading(paired2, "a").text
    assert "higher by" not in reading(paired2, "a").text and "lower by" not in reading(paired2, "a").text
    doc = study_tables(recs, [PAIR], ["a", "b", "c"], ["alone"], ["kd"], "caption")
    assert "**Reading**" in doc.to_markdown() and "<strong>Reading</strong>" in doc.to_html()
    starred = [RunRecord(r.kind, r.pair, r.arch, r.teacher_label and r.teacher_label.replace("b", "*b*"),
                         r.method_label.replace("b", "*b*"), r.seed, r.run_dir, None, metrics=r.metrics) for r in recs]
    said = reading(paired_table(starred, PAIR, ["a", "*b*"], ["kd"]), "a")
    assert "The \\*b* teacher" in said.to_markdown() and "L1 to p* (train)" in said.to_markdown()
    assert "<em>" not in said.to_html() and "The *b* teacher" in said.to_html()


def test_a_difference_cell_of_a_paper_layout_has_its_interval_and_mark():
    from kdlab.reproduce.layouts import paired_difference as layout_difference
    from kdlab.reproduce.layouts import paper_layout
    from kdlab.reproduce.published import published_table

    d = layout_difference({0: 75.0, 1: 74.0, 2: 76.5}, {0: 74.0, 1: 74.5, 2: 75.0})
    assert isinstance(d, Difference) and isinstance(d, Stat) and d.n == 3
    est, lo, hi = _t_interval([1.0, -0.5, 1.5])
    assert d.text() == f"+{est:.2f} [{lo:+.2f}, {hi:+.2f}] (n=3) n.s."
    assert d.csv_fields()["verdict"] == "not significant"
    assert layout_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.5}).text() == "+1.25 (n=2: too few seeds for an interval)"
    table = paper_layout(published_table("sftn", "table1"),
                         lambda row, col: d if col == "wrn_40_2-wrn_16_2.delta" and row == "kd" else None)
    assert f"0.79 / {d.text()}" in table.to_markdown() and "paired over seeds" in table.to_markdown()


def test_the_quickstart_runs_one_single_thread_run_per_core_by_default(monkeypatch):
    import kdlab.api

    seen = []
    monkeypatch.setattr(kdlab.api, "run_study", lambda config, overrides, workers, **kw: seen.append(workers))
    monkeypatch.setattr(kdlab.api.os, "cpu_count", lambda: 2)
    kdlab.api.quickstart([])
    kdlab.api.quickstart([], workers=1)
    monkeypatch.setattr(kdlab.api.os, "cpu_count", lambda: 64)
    kdlab.api.quickstart([])
    monkeypatch.setattr(kdlab.api.os, "cpu_count", lambda: None)
    kdlab.api.quickstart([])
    assert seen == [2, 1, 8, 1]
