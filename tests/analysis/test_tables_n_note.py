"""A table whose cells in one column rest on different numbers of runs says which cells and why: a value NaN or
not recorded for some seeds (kept by the Stat as dropped runs), or no finished run of a seed."""

import math
from pathlib import Path

from kdlab.analysis.document import Stat, Table
from kdlab.analysis.tables import distillation_table, fidelity_table
from kdlab.study.records import RunRecord

PAIR = {"teacher": "t", "student": "s", "key": "t--s", "assistant": None}


def _student(teacher, method, seed, **metrics):
    return RunRecord("student", "t--s", "s", teacher, method, seed, Path(f"/r/{teacher}/{method}/{seed}"),
                     Path(f"/r/t/{teacher}/{seed}"), metrics={"top1": 70.0 + seed, **metrics})


def _teacher(label, seed):
    return RunRecord("teacher", None, "t", label, label, seed, Path(f"/r/t/{label}/{seed}"), None,
                     metrics={"top1": 75.0 + seed})


def test_stat_of_runs_keeps_the_runs_it_left_out():
    s = Stat.of_runs([(2, 0.5), (0, math.nan), (1, None), (3, 0.7)], digits=3)
    assert (s.n, s.values, s.seeds) == (2, (0.5, 0.7), (2, 3))
    assert s.dropped == ((0, "NaN"), (1, "not recorded"))
    assert s.text() == "0.600 ± 0.141 (n=2)"  # the cell itself reads as before


def test_fidelity_table_says_which_cka_cells_have_fewer_seeds_and_why():
    recs = [_student(t, "kd", seed, agreement=80.0, kl_teacher_student=0.2,
                     cka_teacher_student=math.nan if (t, seed) == ("b", 1) else 0.9)
            for t in ("a", "b") for seed in (0, 1, 2)]
    table = fidelity_table(recs, PAIR, ["a", "b"], ["kd"])
    cka = table.rows[1][4]
    assert (cka.n, cka.dropped) == (2, ((1, "NaN"),))
    note = table.n_note()
    assert note == "Cells with fewer values than their column: kd / b, linear CKA: n=2 of 3: NaN for seed 1."
    assert note in table.to_markdown() and f"<p>{note}</p>" in table.to_html()
    # the other columns have their three values everywhere: nothing said about them
    assert "agreement" not in note and "KL" not in note


def test_a_missing_run_and_a_value_not_recorded_are_told_apart():
    recs = [_teacher(t, seed) for t in ("a", "b") for seed in (0, 1, 2)]
    recs += [_student(t, "kd", seed) for t in ("a", "b") for seed in (0, 1, 2) if (t, seed) != ("b", 2)]
    recs += [_student("a", "fitnet", seed) for seed in (0, 1, 2)]
    recs += [RunRecord("student", "t--s", "s", "b", "fitnet", seed, Path(f"/r/b/fitnet/{seed}"), None,
                       metrics={} if seed == 0 else {"top1": 60.0}) for seed in (0, 1, 2)]
    table = distillation_table(recs, PAIR, ["a", "b"], [], ["kd", "fitnet"])
    note = table.n_note()
    assert "kd, b: n=2 of 3: no finished run of seed 2" in note
    assert "fitnet, b: n=2 of 3: not recorded for seed 0" in note
    assert "Teacher" not in note and ", a:" not in note


def test_even_columns_and_plain_tables_have_no_note():
    recs = [_student(t, "kd", seed, agreement=80.0, kl_teacher_student=0.2, cka_teacher_student=0.9)
            for t in ("a", "b") for seed in (0, 1)]
    table = fidelity_table(recs, PAIR, ["a", "b"], ["kd"])
    assert table.n_note() == "" and "Cells with fewer" not in table.to_markdown()
    plain = Table(["x", "y"], [["r", Stat.of([1.0, 2.0])], ["q", Stat.of([1.0])]])
    assert plain.n_note() == "Cells with fewer values than their column: q, y: n=1 of 2: fewer finished runs."


def test_a_cell_repeated_along_its_row_is_named_once():
    alone = [RunRecord("student", None, "s", None, "alone", seed, Path(f"/r/alone/{seed}"), None,
                       metrics={"top1": 60.0}) for seed in (0, 1)]
    recs = [_teacher(t, seed) for t in ("a", "b") for seed in (0, 1, 2)] + alone
    recs += [_student(t, "kd", seed) for t in ("a", "b") for seed in (0, 1, 2)]
    table = distillation_table(recs, PAIR, ["a", "b"], ["alone"], ["kd"])
    assert table.n_note() == ("Cells with fewer values than their column: Student s (alone), a, b: n=2 of 3: no "
                              "finished run of seed 2.")


def test_the_study_tables_say_why_a_cka_cell_has_fewer_seeds(tmp_path):
    from fake_study import SOTEACHER, fake_study, long_config
    from kdlab.analysis.report import write_report

    study = fake_study(tmp_path / "s", long_config(tmp_path / "s"), nan_cka=(SOTEACHER, 1), long_arch=False)
    md_path, html_path = write_report(study)
    note = f"kd / {SOTEACHER}, linear CKA: n=2 of 3: NaN for seed 1"
    assert note in md_path.read_text() and note in html_path.read_text()
