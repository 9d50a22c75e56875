"""Learning curves of a data sweep over the training-set size (SoTeacher §3, Theorem 3.6).

The theorem bounds the ERM minimiser's distance to p* on its training inputs by O(sqrt(K M / (N |Z| delta))) +
O(M / |Z|): with a patch-wise learner the first term falls as N^(-1/2), the second does not.  This module takes
the teachers of a study swept over ``data.num_train``, and per (architecture, teacher method) fits
log L1 = a + b log N to every run (one point per seed and size) and reports the slope b with its 95 % t interval,
over all sizes and over the smaller and the larger half: b = -1/2 is the first term alone, b near 0 a floor (the
second term, or an approximation error of the model), which shows in the larger half first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdlab.analysis.curves import Series, make_series
from kdlab.analysis.document import Stat, Table
from kdlab.analysis.stats import CI, LineFit, line_fit
from kdlab.study.records import RunRecord

PARAM = "data.num_train"
METRICS = [("pstar_l1_train", "training inputs"), ("pstar_l1_test", "test inputs")]


@dataclass
class Curve:
    arch: str
    method: str
    series: Series  # per N, the runs' L1 distances
    fit: LineFit  # on log-log axes

    @property
    def title(self) -> str:
        return f"{self.arch} / {self.method}"

    def part_fit(self, part: str) -> LineFit:
        """The fit over the smaller or the larger half of the sizes (a floor shows as a slope near 0 in the
        larger half only); with an odd number of sizes the middle one is in both."""
        k = (len(self.series.x) + 1) // 2
        sizes = self.series.x[:k] if part == "smaller" else self.series.x[-k:]
        pts = [(n, v) for n, vals in zip(self.series.x, self.series.values) if n in sizes for v in vals]
        return _fit(pts)


def _fit(pts: list[tuple[int, float]]) -> LineFit:
    return line_fit([math.log(n) for n, _ in pts], [math.log(max(v, 1e-12)) for _, v in pts])


def curves(records: list[RunRecord], metric: str = "pstar_l1_train") -> list[Curve]:
    """One curve per (teacher architecture, teacher method) of a ``num_train`` sweep, in plan order."""
    recs = [r for r in records if r.kind == "teacher" and r.sweep_param == PARAM and r.get(metric) is not None]
    keys = list(dict.fromkeys((r.arch, r.sweep_base) for r in recs))
    out = []
    for arch, method in keys:
        pts = [(int(r.sweep_value), float(r.get(metric))) for r in recs if (r.arch, r.sweep_base) == (arch, method)]
        out.append(Curve(arch, method, make_series(f"{arch} / {method}", pts, key=method), _fit(pts)))
    return out


def scaling_table(records: list[RunRecord]) -> Table | None:
    rows = []
    for metric, where in METRICS:
        for c in curves(records, metric):
            first, last = c.series.stats[0], c.series.stats[-1]
            rows.append([c.title, where, CI(c.fit.slope, 3, signed=True),
                         CI(c.part_fit("smaller").slope, 3, signed=True),
                         CI(c.part_fit("larger").slope, 3, signed=True),
                         f"{c.series.x[0]}: {Stat(first.values, 3).text()}",
                         f"{c.series.x[-1]}: {Stat(last.values, 3).text()}"])
    if not rows:
        return None
    return Table(["teacher", "L1 to p* on", "slope of log L1 on log N [95 % CI] (n runs)", "smaller half of N",
                  "larger half of N", "smallest N", "largest N"], rows,
                 title="Distance of the trained model to p* against the training-set size N (Theorem 3.6 predicts "
                       "a slope of -1/2 until the O(M/|Z|) floor)")


def plot_scaling(records: list[RunRecord], out_path: str | Path) -> Path | None:
    from matplotlib.ticker import NullFormatter

    from kdlab.analysis.plotting import colour, legend, new_figure, save, suptitle, title

    panels = [(metric, where, curves(records, metric)) for metric, where in METRICS]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    fig, axes = new_figure(1, len(panels), width=5.0, height=4.0)
    for ax, (_, where, cs) in zip(np.atleast_1d(axes).flat, panels):
        for i, c in enumerate(cs):
            col = colour(i)
            xs = [n for n, vals in zip(c.series.x, c.series.values) for _ in vals]
            ys = [v for vals in c.series.values for v in vals]
            ax.scatter(xs, ys, s=10, color=col, alpha=0.5)
            ax.plot(c.series.x, [s.mean for s in c.series.stats], "o--", color=col, ms=4, lw=0.8)
            grid = np.linspace(math.log(min(c.series.x)), math.log(max(c.series.x)), 20)
            ax.plot(np.exp(grid), np.exp(c.fit.predict(grid)), "-", color=col,
                    label=f"{c.title}: slope {c.fit.slope.text(2, True)}")
        n0 = min(min(c.series.x) for c in cs)
        y0 = max(max(s.mean for s in c.series.stats) for c in cs)
        grid = np.array([n0, max(max(c.series.x) for c in cs)], float)
        ax.plot(grid, y0 * (grid / n0) ** -0.5, ":", color="grey", label="slope -1/2")
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted({n for c in cs for n in c.series.x})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training examples N")
        ax.set_ylabel("mean L1 distance to p*")
        title(ax, f"on its {where}")
        legend(ax)
    suptitle(fig, "Distance to the true label distribution against N (log-log; dashed: means, solid: "
                  "least-squares fits over all sizes)")
    return save(fig, out_path)
