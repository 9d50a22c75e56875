"""Every figure stays legible with long labels: no two texts overlap, every text is inside the figure, and no
legend covers points or bars.

The study is synthetic (tests/fake_study.py): the real planner lays out the runs of a study config with long method
labels and architecture names (with sweeps and a trajectory, so that every figure has data), and each run folder gets
made-up results (summary, per-epoch log, test predictions) instead of training.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from fake_study import ALONE, KD_LONG, NUM_TEST, SOTEACHER, STANDARD, fake_study, long_config, scaling_config
from kdlab.analysis.figures import FIGURES, headline_panels, plot_headline
from kdlab.analysis.plotting import fit_texts, new_figure
from kdlab.analysis.report import write_report
from kdlab.cli.main import main
from kdlab.study.records import load_study


@pytest.fixture(scope="module")
def long_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("layout") / "long"
    return fake_study(out, long_config(out))


@pytest.fixture(scope="module")
def scaling_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("layout") / "scaling"
    return fake_study(out, scaling_config(out))


def compact(text: str) -> str:
    """The text without its whitespace: the same before and after wrapping."""
    return "".join(text.split())


# --- what the figure shows, measured on the drawn figure ----------------------------------------------------------

def _drawn_ticks(axis) -> list[Text]:
    if not axis.get_visible():
        return []
    return [t for tick in axis._update_ticks() for t in (tick.label1, tick.label2)  # noqa: SLF001 - ticks in view
            if t.get_visible() and t.get_text()]


def texts_of(fig: Figure) -> list[tuple[Text, str]]:
    """Every text the figure draws, with its owner: an axes (titles, axis labels, tick labels, annotations), a
    legend, or the figure (suptitle)."""
    out: list[tuple[Text, str]] = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        own = [ax.title, ax._left_title, ax._right_title, *ax.texts]  # noqa: SLF001
        if ax.axison:
            for axis in (ax.xaxis, ax.yaxis):
                if axis.get_visible():
                    own += [axis.label, axis.get_offset_text(), *_drawn_ticks(axis)]
        out += [(t, f"axes {i}") for t in own]
        if ax.get_legend() is not None:
            out += [(t, f"legend of axes {i}") for t in ax.get_legend().get_texts()]
    for j, leg in enumerate(fig.legends):
        out += [(t, f"figure legend {j}") for t in leg.get_texts()]
    if fig._suptitle is not None:  # noqa: SLF001
        out.append((fig._suptitle, "figure"))  # noqa: SLF001
    return [(t, owner) for t, owner in out if t.get_visible() and t.get_text().strip()]


def data_boxes(fig: Figure, renderer) -> list:
    """Display boxes of every point (markers, scatter offsets) and bar of the figure."""
    boxes = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_visible() and line.get_marker() not in (None, "None", "", " "):
                r = line.get_markersize() * renderer.points_to_pixels(1.0) / 2
                boxes += [Bbox([[x - r, y - r], [x + r, y + r]])
                          for x, y in line.get_transform().transform(line.get_xydata()) if x == x and y == y]
        for c in ax.collections:
            if isinstance(c, PathCollection) and c.get_visible():
                boxes += [Bbox([[x - 1, y - 1], [x + 1, y + 1]])
                          for x, y in c.get_offset_transform().transform(c.get_offsets())]
        clip = ax.get_window_extent(renderer)  # what is seen of a bar (a log axis sends it to minus infinity)
        boxes += [b for p in ax.patches if isinstance(p, Rectangle) and p.get_visible() and p.get_width()
                  and p.get_height() and (b := Bbox.intersection(p.get_window_extent(renderer), clip)) is not None]
    return boxes


def layout_problems(fig: Figure) -> list[str]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [(t, owner, t.get_window_extent(renderer)) for t, owner in texts_of(fig)]
    bounds = fig.bbox
    problems = []
    for t, owner, box in texts:
        if box.x0 < bounds.x0 - 1 or box.y0 < bounds.y0 - 1 or box.x1 > bounds.x1 + 1 or box.y1 > bounds.y1 + 1:
            problems.append(f"outside the figure: {t.get_text()!r} ({owner})")
    for (a, oa, ba), (b, ob, bb) in itertools.combinations(texts, 2):
        if oa == ob and oa.startswith(("legend", "figure legend")):
            continue  # a legend lays out its own entries
        if ba.shrunk(0.98, 0.98).overlaps(bb.shrunk(0.98, 0.98)):
            problems.append(f"overlap: {a.get_text()!r} ({oa}) and {b.get_text()!r} ({ob})")
    points = data_boxes(fig, renderer)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    for leg in legends:
        box = leg.get_window_extent(renderer)
        covered = sum(box.overlaps(p) for p in points)
        if covered:
            problems.append(f"legend {[t.get_text() for t in leg.get_texts()][:2]}... covers {covered} points/bars")
    return problems


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, kept to be measured."""
    figures = []
    real = Figure.savefig

    def keep(self, *a, **kw):
        figures.append(self)
        return real(self, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


# --- tests -----------------------------------------------------------------------------------------------------

def test_the_checker_sees_what_fitting_repairs():
    # two panels whose long titles run into each other, and a legend over the points: found, then fitted
    fig, axes = new_figure(1, 2, width=3.4, height=3.2)
    for ax in axes[0]:
        ax.plot(np.linspace(0, 1, 30), np.linspace(0, 1, 30), "o", label="points of a long legend label here")
        ax.set_title(f"{STANDARD} teacher resnet_cifar(depth=8, filters=[32, 32, 64, 128])")
        ax.legend(loc="center")
    before = layout_problems(fig)
    assert any(p.startswith("overlap") for p in before) and any(p.startswith("outside") for p in before)
    assert any("covers" in p for p in before)
    fit_texts(fig)
    assert layout_problems(fig) == []
    got = fig.axes[0].get_title()
    assert "\n" in got and compact(got) == compact(f"{STANDARD} teacher resnet_cifar(depth=8, filters=[32, 32, 64, "
                                                   "128])")  # wrapped, not shortened


@pytest.mark.parametrize("name", [n for n in FIGURES if n != "scaling"])
def test_each_figure_with_long_labels_has_no_overlapping_text(long_study, drawn, tmp_path, name):
    records = load_study(long_study).records
    out = FIGURES[name](records, tmp_path / f"{name}.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name}: not drawn"
    (fig,) = drawn
    assert layout_problems(fig) == [], name


def test_scaling_figure_with_long_labels(scaling_study, drawn, tmp_path):
    out = FIGURES["scaling"](load_study(scaling_study).records, tmp_path / "scaling.png")
    assert out is not None
    assert layout_problems(drawn[0]) == []


def test_reliability_shows_the_count_of_each_bin(long_study, drawn, tmp_path):
    records = load_study(long_study).records
    FIGURES["reliability"](records, tmp_path / "r.png")
    fig = drawn[0]
    strips = [ax for ax in fig.axes if ax.get_ylabel() == "count"]
    assert strips, "no count strip under the diagrams"
    # the first panel is the first teacher method's teachers: their 3 seeds' predictions pooled
    counts = [int(t.get_text()) for t in strips[0].texts]
    assert sum(counts) == 3 * NUM_TEST
    bars = sorted(p.get_height() for p in strips[0].patches)
    assert sorted(counts) == bars


def test_deviation_draws_every_teacher_method(long_study, drawn, tmp_path):
    records = load_study(long_study).records
    FIGURES["deviation"](records, tmp_path / "d.png")
    titles = [compact(ax.get_title()) for ax in drawn[0].axes if ax.get_title()]
    for t in (STANDARD, SOTEACHER, "sftn"):
        assert sum(f"fromthe{t}teacher" in x for x in titles) == 2, t
    assert len(titles) == 3 * 2  # a column per teacher method, a row per distillation method
    drawn.clear()
    FIGURES["deviation"](records, tmp_path / "d1.png", teacher="sftn")
    assert len([ax for ax in drawn[0].axes if ax.get_title()]) == 2


def test_headline_numbers_are_the_runs_and_one_seed_has_no_error_bar(long_study, drawn, tmp_path):
    records = load_study(long_study).records
    (panel,) = headline_panels(records)
    groups = dict(panel.groups)
    assert list(groups) == ["teacher", "kd student", f"{KD_LONG} student"]
    kd_std = [r.get("top1") for r in records if r.kind == "student" and r.method_label == "kd"
              and r.teacher_label == STANDARD and r.pair]
    assert sorted(groups["kd student"][STANDARD].values) == sorted(kd_std)
    assert groups["kd student"][STANDARD].n == 3 and list(panel.alone) == [ALONE]
    # the other teacher methods' points carry their paired difference to the first one's, seed by seed
    by_seed = lambda t: {r.seed: r.get("top1") for r in records  # noqa: E731
                         if r.kind == "student" and r.method_label == "kd" and r.teacher_label == t and r.pair}
    std, so = by_seed(STANDARD), by_seed(SOTEACHER)
    diff = groups["kd student"][SOTEACHER].difference
    assert groups["kd student"][STANDARD].difference is None and diff.n == 3
    assert diff.estimate == pytest.approx(sum(so[s] - std[s] for s in std) / 3)
    # seeds 1 and 2 of one cell gone: n=1, a point without an error bar, marked n=1
    one = [r for r in records if not (r.kind == "student" and r.method_label == "kd" and r.teacher_label == "sftn"
                                      and r.seed > 0)]
    plot_headline(one, tmp_path / "h.png")
    ax = drawn[0].axes[0]
    assert "n=1" in [t.get_text() for t in ax.texts]
    bars = [c for c in ax.containers if c.has_yerr]
    assert len(bars) == 3 * 3 - 1  # every point but the single run's has its error bar
    # a hollow marker for each point the seeds cannot tell from the first teacher method's
    drawn_hollow = sum(c.lines[0].get_markerfacecolor() == "white" for c in ax.containers)
    cells = [s for _, g in headline_panels(one)[0].groups for s in g.values()]
    assert drawn_hollow == sum(s.difference is not None and not s.difference.excludes_zero for s in cells) > 0
    assert layout_problems(drawn[0]) == []


def test_plot_cli_draws_the_headline(long_study, tmp_path, capsys):
    out = tmp_path / "h.png"
    assert main(["plot", "headline", str(long_study), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_shows_the_headline_first(long_study):
    _, html_path = write_report(long_study)
    page = html_path.read_text()
    imgs = [m.split('"')[0] for m in page.split('<img alt="')[1:]]
    assert imgs[0] == "headline" and "deviation" in imgs
    assert page.index('alt="headline"') < page.index("<table>")
