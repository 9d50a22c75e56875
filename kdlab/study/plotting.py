"""Matplotlib helpers shared by the study figures.

Figures are built on matplotlib's object API with an Agg canvas (no pyplot): nothing global is switched, no
display is needed, and figures are freed when they go out of scope.  PNGs are written atomically so two studies
finishing in the same folder never leave a half-written file.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..engine.checkpoint import atomic_write_bytes
from .curves import Series, is_numeric

DPI = 110
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]


# for more lines than PALETTE has colours: its colours, then their lighter partners (matplotlib's tab20 order)
MORE = ["#aec7e8", "#ff9896", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d",
        "#c7c7c7"]


def colour(i: int) -> str:
    return (PALETTE + MORE)[i % (len(PALETTE) + len(MORE))]


def new_figure(nrows: int, ncols: int, width: float = 4.2, height: float = 3.3):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save(fig: Figure, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(out, buf.getvalue())
    return out


def x_positions(xs: list[Any], order: list[Any] | None) -> list[float]:
    """Numeric x as is; categorical x (strings, booleans) at their index in ``order``."""
    return [float(x) for x in xs] if order is None else [float(order.index(x)) for x in xs]


def band(ax, s: Series, color: str, order: list[Any] | None = None, marker: str = "o", linestyle: str = "-",
         label: str | None = None) -> None:
    """Mean over seeds as a line with markers and ± one standard deviation as a band (error bars for
    categorical x, where a band between categories would mean nothing)."""
    if not s.x:
        return
    xs, mu, sd = x_positions(s.x, order), s.mean, s.std
    label = label or s.label
    if order is not None:
        ax.errorbar(xs, mu, yerr=sd, color=color, marker=marker, linestyle=linestyle, capsize=3, label=label)
        return
    ax.plot(xs, mu, color=color, marker=marker, linestyle=linestyle, label=label, markersize=4)
    if s.n > 1:
        ax.fill_between(xs, [m - d for m, d in zip(mu, sd)], [m + d for m, d in zip(mu, sd)], color=color,
                        alpha=0.18, linewidth=0)


def hline(ax, values: list[float], color: str, label: str, linestyle: str = "--") -> None:
    xs = [v for v in values if v is not None and not math.isnan(v)]
    if xs:
        ax.axhline(sum(xs) / len(xs), color=color, linestyle=linestyle, linewidth=1.2, label=label)


def categorical_order(series: list[Series]) -> list[Any] | None:
    xs = list(dict.fromkeys(x for s in series for x in s.x))
    return None if all(is_numeric(x) for x in xs) else xs


def set_x_axis(ax, series: list[Series], order: list[Any] | None, label: str) -> None:
    ax.set_xlabel(label)
    if order is not None:
        ax.set_xticks(range(len(order)), [str(x) for x in order], rotation=20 if len(order) > 3 else 0)
        ax.set_xlim(-0.5, len(order) - 0.5)
        return
    xs = [float(x) for s in series for x in s.x]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 10:  # values spanning more than a decade
        ax.set_xscale("log")


def legend(ax, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, **kw)


def blank(ax) -> None:
    ax.set_axis_off()


def n_seeds(n: int) -> str:
    return f"n={n} seed" + ("" if n == 1 else "s")


def title(ax, text: str, size: float = 8.5) -> None:
    ax.set_title(text, fontsize=size)


def suptitle(fig: Figure, text: str) -> None:
    width = fig.get_figwidth()
    fig.suptitle(textwrap.fill(text, max(40, int(width * 13))), fontsize=10)


def integer_x(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
