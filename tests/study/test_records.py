"""The study layer's typed objects: RunRecord from the plan, runs.json read back without re-planning, tables of
Stat cells computed once and rendered as markdown, HTML and CSV."""

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest

import kdlab.analysis.document
import kdlab.study.plan
from kdlab.analysis.document import Stat, Table, Value, mean_std
from kdlab.analysis.report import render_html, report_document, write_report
from kdlab.analysis.study_command import render_tables, run_study
from kdlab.analysis.tables import distillation_table
from kdlab.config import StudyConfig, load_config
from kdlab.runs.folder import SUMMARY, RunFolder, write_manifest
from kdlab.study import plan_study
from kdlab.study.records import RunRecord, StudyData, load_study
from study_configs import study_cfg


def small_cfg(out):
    cfg = study_cfg(out, seeds=[0, 1])
    cfg["teacher"]["methods"] = {"standard": "standard", "wd0": "standard"}
    cfg["student"]["methods"] = {"alone": "none", "kd": "kd"}
    return cfg  # 2 teachers x 2 seeds, 2 students alone, 4 KD students: 10 runs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "study"
    res = run_study(small_cfg(out), log=lambda s: None)
    assert not res.failed and len(res.records) == 10
    return out, res


def no_planning(monkeypatch):
    def refuse(cfg):
        raise AssertionError("plan_study called")

    monkeypatch.setattr(kdlab.study.plan, "plan_study", refuse)


def test_records_are_run_records_with_the_plans_teacher_folder(study):
    out, res = study
    plan = {p.run_dir: p for p in plan_study(load_config(StudyConfig, small_cfg(out)))}
    assert res.records and all(isinstance(r, RunRecord) for r in res.records)
    for r in res.records:
        p = plan[r.run_dir]
        assert (r.kind, r.pair, r.arch, r.teacher_label, r.method_label, r.seed) == (
            p.kind, p.pair, p.arch, p.teacher_label, p.method_label, p.seed)
        assert r.teacher_run_dir == (p.needs[0] if p.needs else None)
        assert r.metrics == json.loads(RunFolder(r.run_dir).summary_file.read_text())
        assert r.get("top1") == r.metrics["top1"] and r.get("kind") == r.kind and r.get("nope", 7) == 7
    kd = next(r for r in res.records if r.method_label == "kd" and r.teacher_label == "wd0" and r.seed == 1)
    assert kd.teacher_run_dir == out / "teachers" / "resnet8" / "wd0" / "seed1"
    # results.csv keeps its columns, written from the records; run folders relative to the study's
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["run_dir"] for r in rows] == [str(r.run_dir.relative_to(out)) for r in res.records]
    assert [float(r["top1"]) for r in rows] == [r.get("top1") for r in res.records]


def test_runs_json_is_written_when_the_study_starts(tmp_path, monkeypatch):
    import kdlab.analysis.study_command as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(small_cfg(tmp_path / "s"), log=lambda s: None)
    runs = json.loads((tmp_path / "s" / "runs.json").read_text())["runs"]
    assert len(runs) == 10 and not list((tmp_path / "s").rglob(SUMMARY))
    kd = next(r for r in runs if r["method_label"] == "kd" and r["teacher_label"] == "wd0" and r["seed"] == 1)
    assert kd["run_dir"] == "students/resnet8--mlp-hidden=16/wd0/kd/seed1"
    assert kd["teacher_run_dir"] == "teachers/resnet8/wd0/seed1"
    assert not any(str(tmp_path) in json.dumps(r) for r in runs)  # relative to the study folder


def test_load_study_reads_runs_json_without_planning_even_moved(study, tmp_path, monkeypatch):
    out, res = study
    no_planning(monkeypatch)
    assert load_study(out).records == res.records  # the same records as the study's own
    shutil.copytree(out, tmp_path / "copy", ignore=shutil.ignore_patterns("checkpoints"))
    moved = Path(shutil.move(tmp_path / "copy", tmp_path / "moved"))
    # a checkpoint path in a summary says nothing about the teacher's run folder
    kd_dir = moved / "students" / "resnet8--mlp-hidden=16" / "wd0" / "kd" / "seed1"
    summary = json.loads(RunFolder(kd_dir).summary_file.read_text())
    RunFolder(kd_dir).summary_file.write_text(json.dumps({**summary, "teacher_path": "/elsewhere/checkpoints/last.pt"}))
    write_manifest(kd_dir)  # as if the run had been written so (an edit alone is refused as damage)
    data = load_study(moved)
    assert data.planned == 10 and len(data.records) == 10
    assert all(str(r.run_dir).startswith(str(moved)) for r in data.records)
    kd = next(r for r in data.records if r.run_dir == kd_dir)
    assert kd.teacher_run_dir == moved / "teachers" / "resnet8" / "wd0" / "seed1"
    key = lambda r: (r.kind, r.teacher_label, r.method_label, r.seed)
    assert {key(r): r.get("top1") for r in data.records} == {key(r): r.get("top1") for r in res.records}
    md, _ = write_report(moved)  # the report of a moved study, with planning forbidden
    assert "10 of 10 planned runs" in md.read_text()


def test_a_study_folder_without_runs_json_is_planned_once(study, tmp_path, monkeypatch):
    out, res = study
    old = Path(shutil.copytree(out, tmp_path / "old", ignore=shutil.ignore_patterns("checkpoints", "runs.json")))
    calls = []
    original = kdlab.study.plan.plan_study
    monkeypatch.setattr(kdlab.study.plan, "plan_study", lambda cfg: calls.append(1) or original(cfg))
    data = load_study(old)
    assert len(calls) == 1 and data.planned == 10
    key = lambda r: (r.kind, r.teacher_label, r.method_label, r.seed)
    assert {key(r): (r.teacher_run_dir and r.teacher_run_dir.relative_to(old)) for r in data.records} == \
        {key(r): (r.teacher_run_dir and r.teacher_run_dir.relative_to(out)) for r in res.records}


def _stats(tables) -> list[Stat]:
    return list({id(c): c for t in tables for row in t.rows for c in row if isinstance(c, Stat)}.values())


def test_each_cell_is_computed_once_and_shared_by_every_renderer(study, monkeypatch):
    out, res = study
    calls = []

    def counted(values):
        calls.append(1)
        return mean_std(values)

    monkeypatch.setattr(kdlab.analysis.document, "mean_std", counted)
    doc = render_tables(load_config(StudyConfig, small_cfg(out)), res.records)
    stats = _stats(doc.tables)
    # 3 of Stats, and the paired differences to the standard teacher and to the student alone
    assert len(doc.tables) == 5 and len(calls) == len(stats) > 0
    md, page = doc.to_markdown(), doc.to_html()
    for t in doc.tables:
        t.to_csv()
    assert len(calls) == len(stats)  # rendering only formats
    dist = doc.tables[0]
    for row in dist.rows:  # the other columns' Stats carry their paired difference to the baseline column's
        if isinstance(row[1], Stat) and isinstance(row[2], Stat) and row[1] is not row[2]:
            assert row[2].difference is not None and row[1].difference is None
    for s in stats:
        assert s.text() in md and s.text() in page
    assert md == res.table and (out / "results.md").read_text() == f"# tiny\n\n{md}\n"

    data = load_study(out)
    calls.clear()
    report = report_document(data, {})
    made = len(calls)
    report.to_markdown(), render_html(report, "t")
    assert made > 0 and len(calls) == made


def test_report_html_tables_are_the_tables_own_html(study, tmp_path):
    out, _ = study
    data = load_study(out)
    # a label holding markdown's table and emphasis characters
    odd = [dataclasses.replace(r, method_label="k|d *x*") if r.method_label == "kd" else r for r in data.records]
    methods = {("k|d *x*" if k == "kd" else k): v for k, v in data.config.student.methods.items()}
    cfg = data.config.model_copy(update={"student": data.config.student.model_copy(update={"methods": methods})})
    doc = report_document(StudyData(out, cfg, odd, data.planned), {})
    page = render_html(doc, "t")
    tables = [b for b in doc if isinstance(b, Table)]
    assert tables and all(t.to_html() in page for t in tables)
    assert "<td>k|d *x*</td>" in page and "<em>" not in page.split("<table>", 1)[1]
    assert "| k\\|d *x* " in doc.to_markdown()  # kept one cell in markdown too
    _, html_path = write_report(out)
    written = html_path.read_text()
    assert all(t.to_html() in written for t in report_document(data, {}).tables)


def _rec(kind, teacher_label, method_label, seed, top1, pair="t--s", arch="s"):
    return RunRecord(kind, pair if kind == "student" and method_label != "alone" else None,
                     "t" if kind == "teacher" else arch, teacher_label, method_label, seed,
                     Path(f"/r/{kind}/{teacher_label}/{method_label}/{seed}"), None, metrics={"top1": top1})


def test_table_csv_round_trips_the_numbers():
    recs = [_rec("teacher", t, t, s, v) for t, vals in [("a", [70.0, 71.5]), ("b", [72.25, 73.0])]
            for s, v in enumerate(vals)]
    recs += [_rec("student", None, "alone", s, v) for s, v in enumerate([60.1, 61.3])]
    recs += [_rec("student", t, m, s, v) for t, m, vals in [("a", "kd", [64.0, 65.0]), ("b", "kd", [66.5, 66.0]),
                                                          ("a", "fitnet", [63.3]), ("b", "fitnet", [])]
             for s, v in enumerate(vals)]
    pair = {"teacher": "t", "student": "s", "key": "t--s", "assistant": None}
    table = distillation_table(recs, pair, ["a", "b"], ["alone"], ["kd", "fitnet"])
    assert [c.text() if not isinstance(c, str) else c for c in table.rows[-2]] == ["**Best**", "64.50", "66.25"]
    kd_b = table.rows[2][2]
    assert (kd_b.mean, kd_b.delta, kd_b.difference.n) == (66.25, 1.75, 2)  # paired: (66.5-64) and (66-65)
    assert table.rows[3][2].text() == "-"  # no run: no number, no difference
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert len(rows) == sum(len(r) - 1 for r in table.rows)
    by = {(r["row"], r["column"]): r for r in rows}
    for row in table.rows:
        for col, cell in zip(table.header[1:], row[1:]):
            got = by[(row[0] if isinstance(row[0], str) else row[0].plain(), col)]
            if isinstance(cell, Stat):
                assert int(got["n"]) == cell.n
                if cell.n:
                    assert (float(got["mean"]), float(got["std"])) == (cell.mean, cell.std)
                assert got["delta"] == ("" if cell.delta is None else repr(cell.delta))
            elif isinstance(cell, Value):
                assert float(got["mean"]) == cell.value
    assert by[("Best", "b")]["text"] == "66.25" and by[("Teacher t", "b")]["text"] == table.rows[0][2].text()
