import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from figure_study import copy_study, reduced_copy, summaries, tiny_study
from kdlab.analysis import curves
from kdlab.analysis.document import mean_std
from kdlab.analysis.figure_names import FIGURE_HELP
from kdlab.analysis.figures import FIGURES, plot_deviation, plot_late_distillation, plot_sweeps, plot_trajectory
from kdlab.analysis.plotting import categorical_order, new_figure, set_x_axis
from kdlab.cli.main import main
from kdlab.study.records import StudyDataError, load_study

PNG = b"\x89PNG\r\n\x1a\n"
# a data sweep is a study's only sweep, so the tiny study (method sweeps, a trajectory) cannot have the scaling
# figure: tests/study/test_plan_lab_studies.py draws it
OTHER_STUDY = {"scaling"}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return tiny_study(tmp_path_factory)


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG and len(data) > 1024, path


def test_the_study_writes_every_figure(study):
    assert list(FIGURES) == list(FIGURE_HELP)
    for name in set(FIGURES) - OTHER_STUDY:
        assert_png(study / "figures" / f"{name}.png")


def test_records_are_reread_from_the_run_folders_even_when_the_folder_moved(study, tmp_path):
    moved = copy_study(study, tmp_path / "moved")
    a, b = load_study(study), load_study(moved)
    assert a.planned == b.planned == len(a.records) == 30
    key = lambda r: (r.kind, r.teacher_label, r.method_label, r.seed)
    assert {key(r): r.get("top1") for r in a.records} == {key(r): r.get("top1") for r in b.records}
    assert all(str(r.run_dir).startswith(str(moved)) for r in b.records)
    assert all(str(r.teacher_run_dir).startswith(str(moved)) for r in b.records if r.pair)


def _top1(runs, *parts):
    return [s["top1"] for d, s in runs.items() if d.parts[-len(parts) - 1:-1] == parts]


def test_trajectory_numbers_come_from_the_run_folders(study):
    runs = summaries(study)
    (tr,) = curves.trajectories(load_study(study).records)
    assert [m.teacher_label for m in tr.methods] == ["standard", "soteacher"] and tr.method == "kd"
    for m in tr.methods:
        assert m.student.x == [1, 2] and m.seeds == [0, 1]
        for e, label in ((1, "kd@1"), (2, "kd")):  # at the last epoch: the plain KD student (the last checkpoint)
            assert sorted(m.student.values[e - 1]) == sorted(_top1(runs, m.teacher_label, label))
        logs = [[json.loads(x) for x in (study / "teachers" / "mlp-hidden=32" / m.teacher_label / f"seed{s}" /
                                         "metrics.jsonl").read_text().splitlines()] for s in (0, 1)]
        assert m.teacher_top1.mean == pytest.approx([mean_std([lg[e]["test_top1"] for lg in logs])[0]
                                                     for e in (0, 1)])
        assert m.loss_key == "ce" and m.teacher_loss.values[1] == pytest.approx([lg[1]["ce"] for lg in logs])
    assert sorted(tr.references["alone student (no teacher)"]) == sorted(_top1(runs, "mlp-hidden=16", "alone"))


def test_sweep_and_late_distillation_series(study):
    records = load_study(study).records
    runs = summaries(study)
    (sw,) = curves.sweeps(records)
    assert (sw.role, sw.base, sw.param, sw.base_value) == ("teacher", "soteacher", "lambda_cr_max", 1.0)
    assert sw.teacher.x == [0.5, 1.0] and not sw.categorical
    teachers = {d: s for d, s in runs.items() if d.parts[0] == "teachers"}
    assert sorted(sw.teacher.values[0]) == sorted(_top1(teachers, "soteacher[lambda_cr_max=0.5]"))
    assert sorted(sw.teacher.values[1]) == sorted(_top1(teachers, "soteacher"))
    assert [s.label for s in sw.students] == ["kd student", "kdT2 student"]
    assert sorted(sw.students[1].values[0]) == sorted(_top1(runs, "soteacher[lambda_cr_max=0.5]", "kdT2"))
    assert set(sw.references) == {"teacher (standard)", "kd student (standard teacher)",
                                  "kdT2 student (standard teacher)"}
    late = curves.sweeps(records, late=True)
    assert [(s.param, s.base_value) for s in late] == [("switch_epoch", 0)]
    lines = {s.key: s for s in late[0].students}
    assert set(lines) == {"standard", "soteacher"}  # students of the swept teacher variant stay out
    assert lines["standard"].x == [0, 1]
    assert sorted(lines["standard"].values[1]) == sorted(_top1(runs, "standard", "kd[switch_epoch=1]"))
    assert "| 0 (base)" in curves.sweep_table(late[0]).to_markdown()
    assert "alone student (no teacher)" in curves.reference_table(late[0]).to_markdown()


def test_categorical_and_log_axes(study, tmp_path):
    recs = load_study(study).records
    # relabel the sweep as a categorical one (the consistency schedule) and as a log-spaced one
    cat = [dataclasses.replace(r, sweep_value={0.5: "cosine"}.get(r.sweep_value, r.sweep_value)) for r in recs]
    s = curves.make_series("x", [("linear", 1.0), ("cosine", 2.0), ("linear", 3.0)])
    assert s.x == ["linear", "cosine"] and s.mean == [2.0, 2.0]
    assert curves.sweeps(cat)[0].categorical
    assert_png(plot_sweeps(cat, tmp_path / "cat.png"))
    log = [dataclasses.replace(r, sweep_value={0.5: 1e-4}.get(r.sweep_value, r.sweep_value)) for r in recs]
    assert curves.sweeps(log)[0].teacher.x == [1e-4, 1.0]
    assert_png(plot_sweeps(log, tmp_path / "log.png"))
    scales = {}
    for name, series in [("log", [curves.make_series("a", [(1e-5, 1.0), (1e-3, 2.0)])]),
                         ("linear", [curves.make_series("a", [(0.5, 1.0), (1.0, 2.0)])]), ("cat", [s])]:
        fig, axes = new_figure(1, 1)
        set_x_axis(axes[0][0], series, categorical_order(series), "x")
        scales[name] = axes[0][0].get_xscale(), [t.get_text() for t in axes[0][0].get_xticklabels()]
    assert scales["log"][0] == "log" and scales["linear"][0] == "linear"
    assert scales["cat"] == ("linear", ["linear", "cosine"])


def test_figures_without_their_data_return_none(study, tmp_path):
    recs = load_study(study).records
    plain = [r for r in recs if r.trajectory_epoch is None and r.sweep_param is None]
    assert plot_trajectory(plain, tmp_path / "t.png") is None
    assert plot_sweeps(plain, tmp_path / "s.png") is None
    assert plot_late_distillation(plain, tmp_path / "l.png") is None
    assert plot_deviation([r for r in recs if r.kind == "teacher"], tmp_path / "d.png") is None
    assert not list(tmp_path.glob("*.png"))
    with pytest.raises(StudyDataError, match="no teacher method 'nope'"):
        plot_deviation(recs, tmp_path / "d.png", teacher="nope")


def test_deviation_probabilities(study):
    from kdlab.analysis.prediction_figures import true_label_prob

    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]))
    assert true_label_prob(logits, np.array([0, 2])) == pytest.approx([0.7, 0.5])


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_plot_cli_draws_each_figure_and_fails_in_one_line(study, tmp_path, capsys):
    for name in [f for f in FIGURES if f not in OTHER_STUDY]:
        out = tmp_path / f"{name}.png"
        extra = ["--teacher", "soteacher"] if name == "deviation" else []
        code, stdout, _ = run_cli(capsys, "plot", name, study, "--out", out, *extra)
        assert code == 0 and stdout.strip() == str(out)
        assert_png(out)
    with pytest.raises(SystemExit) as e:
        main(["plot", "--help"])
    assert e.value.code == 0 and "usage: kdlab plot" in capsys.readouterr().out
    plain = reduced_copy(study, tmp_path / "plain", drop=("sweeps", "trajectory"))
    for argv, code, fragment in [
        (["plot", "trajectory", tmp_path / "missing"], 1, "study folder not found"),
        (["plot", "sweeps", tmp_path], 1, "is not a study folder (no study.yaml)"),
        (["plot", "trajectory", plain], 1, "no data for the trajectory figure; it needs trajectory students"),
        (["plot", "late-distillation", plain], 1, "it needs a student sweep over switch_epoch"),
        (["plot", "deviation", study, "--teacher", "nope"], 1, "no teacher method 'nope'"),
        (["plot", "reliability", study, "--teacher", "standard"], 2, "--teacher applies to the deviation figure"),
    ]:
        got, _, err = run_cli(capsys, *argv)
        assert got == code and fragment in err and err.count("\n") == 1, err
    code, _, _ = run_cli(capsys, "plot", "reliability", plain)  # the reduced study still has its runs
    assert code == 0 and (plain / "figures" / "reliability.png").exists()
