"""Matplotlib helpers shared by the study figures.

Figures are built on matplotlib's object API with an Agg canvas (no pyplot): nothing global is switched, no
display is needed, and figures are freed when they go out of scope.  PNGs are written atomically so two studies
finishing in the same folder never leave a half-written file.

Labels come from the study config (method labels, architecture names) and can be of any length.  Constrained
layout makes room for every title, label and legend but never shortens one, so a long title runs into its
neighbour's and off the figure.  :func:`save` therefore fits the texts first (:func:`fit_texts`): titles, axis
labels, category tick labels and legends that do not fit their room are re-wrapped at word boundaries, and a
legend inside the axes that covers points or bars is moved beside them.
"""

from __future__ import annotations

import io
import math
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.ticker import FixedLocator, MaxNLocator
from matplotlib.transforms import Bbox

from kdlab.analysis.curves import Series, is_numeric
from kdlab.core.checkpoint import atomic_write_bytes

DPI = 110
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]


# for more lines than PALETTE has colours: its colours, then their lighter partners (matplotlib's tab20 order)
MORE = ["#aec7e8", "#ff9896", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d",
        "#c7c7c7"]


def colour(i: int) -> str:
    return (PALETTE + MORE)[i % (len(PALETTE) + len(MORE))]


def blank_figure(width: float, height: float) -> Figure:
    # the PNG's dpi from the start: text is measured while fitting it, at the size it is saved
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def new_figure(nrows: int, ncols: int, width: float = 4.2, height: float = 3.3):
    fig = blank_figure(width * ncols, height * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save(fig: Figure, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fit_texts(fig)
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
        # horizontal: fit_texts wraps categories that run into each other (a rotated label's box would not tell)
        ax.set_xticks(range(len(order)), [str(x) for x in order])
        ax.set_xlim(-0.5, len(order) - 0.5)
        return
    xs = [float(x) for s in series for x in s.x]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 10:  # values spanning more than a decade
        ax.set_xscale("log")


LEGEND_LABEL = 42  # characters per line of a legend entry


def legend(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, [wrap(lbl, LEGEND_LABEL) for lbl in labels], fontsize=7, **kw)


def figure_legend(fig: Figure, axes=None, ncols: int = 4, markerscale: float = 1.0) -> None:
    """One legend for the figure's panels, below them: a legend inside a panel hides its points or bars, and
    panels that share their entries need them only once.  Entries are merged by label, in order of appearance;
    ``markerscale`` enlarges the samples of small scatter points."""
    entries: dict[str, Any] = {}
    for ax in fig.axes if axes is None else axes:
        for h, lbl in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(lbl, h)
    if entries:
        _figure_legend(fig, list(entries.values()), [wrap(lbl, LEGEND_LABEL) for lbl in entries],
                       min(ncols, len(entries)), markerscale)


def _figure_legend(fig: Figure, handles, labels, ncols: int, markerscale: float = 1.0) -> None:
    leg = fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=7.5, frameon=False,
                     markerscale=markerscale)
    for h in leg.legend_handles:  # the samples opaque: points drawn faint so that they can be many
        if h is not None:
            h.set_alpha(1.0)
    # to make it again with fewer columns from the plotted artists (an error bar's sample is not its artist)
    leg._kdlab_made = (handles, labels, markerscale)


def blank(ax) -> None:
    ax.set_axis_off()


def n_seeds(n: int) -> str:
    return f"n={n} seed" + ("" if n == 1 else "s")


def title(ax, text: str, size: float = 8.5) -> None:
    ax.set_title(text, fontsize=size)


def suptitle(fig: Figure, text: str) -> None:
    width = fig.get_figwidth()
    fig.suptitle(textwrap.fill(text, max(40, int(width * 13))), fontsize=10)


def wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` characters; a word longer than that (a slug, a pair name) is
    broken, since it would overflow all the same."""
    width = max(width, 4)
    return "\n".join(textwrap.fill(line, width) if len(line) > width else line for line in text.split("\n"))


def seed_list(seeds: list[int]) -> str:
    """Seeds as a title shows them: ``0-4`` for a run of consecutive seeds, else ``0, 2, 5``."""
    s = sorted(seeds)
    if len(s) > 2 and s == list(range(s[0], s[-1] + 1)):
        return f"{s[0]}-{s[-1]}"
    return ", ".join(map(str, s))


# --- fitting the texts into the figure ---------------------------------------------------------------------------

FIT_ROUNDS = 16  # re-wrapping a title changes the layout, which can make another text too long: a few rounds
_SOURCE = "_kdlab_source"  # the text as the figure set it, before any wrapping
GROW = 1.25  # a figure whose layout collapsed is enlarged by this factor per round
MIN_LINE = 8  # characters: a panel too narrow for that gets no narrower text (a column of syllables reads worse)


def _narrower(text: str, size: float, room: float) -> int | None:
    """Characters per line that make ``text`` (``size`` pixels wide) fit ``room``, in proportion; None when it
    fits or cannot get narrower."""
    if size <= room:
        return None
    longest = max(len(line) for line in text.split("\n"))
    width = min(longest - 1, int(longest * room / size * 0.95))
    return width if width >= MIN_LINE else None


def _rewrap(t: Text, size: float, room: float) -> bool:
    width = _narrower(t.get_text(), size, room)
    if width is None:
        return False
    src = getattr(t, _SOURCE, None) or t.get_text()
    setattr(t, _SOURCE, src)
    t.set_text(wrap(src, width))
    return True


def _drawn(t: Text) -> bool:
    return t.get_visible() and bool(t.get_text())


def drawn_tick_labels(axis) -> list[Text]:
    """The tick labels the axis draws (matplotlib keeps Tick objects outside the view limits too)."""
    if not axis.get_visible():
        return []
    ticks = axis._update_ticks()  # noqa: SLF001 - the ticks within the view, the ones drawn
    return [t for tick in ticks for t in (tick.label1, tick.label2) if _drawn(t)]


def _fit_ticks(axis, renderer) -> bool:
    """Tick labels of an x-axis that run into each other.  Category labels (words at fixed ticks) are wrapped to
    the spacing of the ticks and set again on the axis (its formatter writes them into the ticks at every draw);
    numbers get half as many ticks."""
    labels = [t for t in drawn_tick_labels(axis) if t.get_rotation() == 0]
    if len(labels) < 2:
        return False
    boxes = sorted(((t.get_window_extent(renderer), t) for t in labels), key=lambda b: b[0].x0 + b[0].x1)
    if all(a.x1 + 2 <= b.x0 for (a, _), (b, _) in zip(boxes, boxes[1:])):
        return False
    loc = axis.get_major_locator()
    if isinstance(loc, FixedLocator) and any(c.isalpha() for t in labels for c in t.get_text()):
        spacing = min((b.x0 + b.x1 - a.x0 - a.x1) / 2 for (a, _), (b, _) in zip(boxes, boxes[1:]))
        box, widest = max(boxes, key=lambda b: b[0].width)
        width = _narrower(widest.get_text(), box.width, spacing - 4)
        if width is None:
            return False
        source = getattr(axis, _SOURCE, None)
        if source is None:
            source = list(axis.major.formatter.format_ticks(axis.get_majorticklocs()))
            setattr(axis, _SOURCE, source)
        axis.set_ticklabels([wrap(x, width) for x in source])
        return True
    if isinstance(loc, MaxNLocator) and len(labels) > 2:
        axis.set_major_locator(MaxNLocator(nbins=max(2, len(labels) // 2), integer=getattr(loc, "_integer", False)))
        return True
    return False


def _along(xy: np.ndarray, step: float = 4.0) -> list[tuple[float, float]]:
    """Points every ``step`` pixels along a polyline in display coordinates (its gaps, NaN, skipped)."""
    out = []
    for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:]):
        if not all(np.isfinite([x0, y0, x1, y1])):
            continue
        k = max(1, int(np.hypot(x1 - x0, y1 - y0) / step))
        out += [(x0 + (x1 - x0) * i / k, y0 + (y1 - y0) * i / k) for i in range(k + 1)]
    return out


def data_extents(ax, renderer, lines: bool = False) -> list[Bbox]:
    """Display boxes of the points and bars of ``ax`` and of its twins (what a legend must not cover), and with
    ``lines`` of points along its lines; bands are left out."""
    out = []
    for a in ax.figure.axes:
        if a is not ax and a.get_position().bounds != ax.get_position().bounds:
            continue
        for line in a.get_lines():
            if not line.get_visible() or not line.get_xydata().size:
                continue
            xy = line.get_transform().transform(line.get_xydata())
            if line.get_marker() not in (None, "None", "", " "):
                r = line.get_markersize() * renderer.points_to_pixels(1.0) / 2
                out += [Bbox([[x - r, y - r], [x + r, y + r]]) for x, y in xy if x == x and y == y]
            if lines and line.get_linestyle() not in ("None", "", " "):
                out += [Bbox([[x - 1, y - 1], [x + 1, y + 1]]) for x, y in _along(xy)]
        for c in a.collections:
            if isinstance(c, PathCollection) and c.get_visible() and len(c.get_offsets()):
                xy = c.get_offset_transform().transform(c.get_offsets())
                out += [Bbox([[x - 1, y - 1], [x + 1, y + 1]]) for x, y in xy if x == x and y == y]
        # a bar is seen within its axes only (on a log scale it reaches down to minus infinity)
        clip = a.get_window_extent(renderer)
        out += [b for p in a.patches if isinstance(p, Rectangle) and p.get_visible() and p.get_height()
                and p.get_width() and (b := Bbox.intersection(p.get_window_extent(renderer), clip)) is not None]
    return out


def _overlaps(box: Bbox, others: list[Bbox]) -> bool:
    return any(box.overlaps(o) for o in others)


def _fit_legend(ax, renderer) -> bool:
    """An axes legend that covers points or bars moves beside its axes (once: outside, nothing to avoid)."""
    leg = ax.get_legend()
    if leg is None or getattr(leg, "_kdlab_outside", False):
        return False
    if not _overlaps(leg.get_window_extent(renderer), data_extents(ax, renderer, lines=True)):
        return False
    handles, labels = ax.get_legend_handles_labels()
    moved = ax.legend(handles, [wrap(lbl, 30) for lbl in labels], fontsize=7, loc="upper left",
                      bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    moved._kdlab_outside = True
    return True


def _fit_figure_legend(fig: Figure, leg, renderer) -> bool:
    """A figure legend wider than the figure: made again with one column fewer (a legend lays out its columns
    when it is made), and at one column its lines wrapped."""
    box = leg.get_window_extent(renderer)
    if box.width <= fig.bbox.width - 4:
        return False
    ncols = leg._ncols  # noqa: SLF001 - Legend keeps no public getter for its columns
    if ncols == 1 or not hasattr(leg, "_kdlab_made"):
        return any([_rewrap(t, box.width, fig.bbox.width - 40) for t in leg.get_texts()])
    handles, labels, markerscale = leg._kdlab_made
    leg.remove()
    _figure_legend(fig, handles, labels, ncols - 1, markerscale)
    return True


MIN_PANEL = (2.4, 1.5)  # inches: a panel narrower or flatter than this after fitting its texts enlarges the figure
SMALL = "_kdlab_small"  # set on an axes meant to be flat (the count strip under a reliability diagram)


def small_axes(ax) -> None:
    setattr(ax, SMALL, True)


def _grow_flat_panels(fig: Figure, renderer) -> bool:
    """Long titles, wrapped labels and legends beside the axes take room from the panels: give it back, per row
    (column) of panels."""
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    if not panels:
        return False
    boxes = [ax.get_window_extent(renderer) for ax in panels]
    wide = MIN_PANEL[0] - min(b.width for b in boxes) / fig.dpi
    tall = [b.height / fig.dpi for ax, b in zip(panels, boxes) if not getattr(ax, SMALL, False)]
    high = MIN_PANEL[1] - min(tall) if tall else 0.0
    if wide <= 0.05 and high <= 0.05:
        return False
    if wide > 0.05:
        fig.set_figwidth(fig.get_figwidth() + wide * len({round(ax.get_position().x0, 3) for ax in panels}))
    if high > 0.05:
        rows = {round(ax.get_position().y0, 3) for ax in panels if not getattr(ax, SMALL, False)}
        fig.set_figheight(fig.get_figheight() + high * len(rows))
    _unwrap(fig)  # what was wrapped for the small panels may fit the larger ones
    return True


def _unwrap(fig: Figure) -> None:
    for t in fig.findobj(Text):
        src = getattr(t, _SOURCE, None)
        if src is not None:
            t.set_text(src)
    for ax in fig.axes:
        src = getattr(ax.xaxis, _SOURCE, None)
        if src is not None:
            ax.xaxis.set_ticklabels(src)


def fit_texts(fig: Figure) -> None:
    """Re-wrap every title, axis label, category tick label and legend that does not fit its room: a title or an
    x label the width of its axes, a y label its height, the suptitle and the figure legends the figure's width;
    move an axes legend that covers data beside the axes."""
    for round_ in range(FIT_ROUNDS):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.draw_without_rendering()
        if any("constrained_layout not applied" in str(w.message) for w in caught):
            # the decorations leave the panels no room: a larger figure, rather than panels drawn over each other
            fig.set_size_inches(fig.get_figwidth() * GROW, fig.get_figheight() * GROW)
            continue
        renderer = fig.canvas.get_renderer()
        changed = False
        for ax in fig.axes:
            if not ax.get_visible() or not ax.axison:
                continue
            box = ax.get_window_extent(renderer)
            for t in (ax.title, ax._left_title, ax._right_title, ax.xaxis.label):  # noqa: SLF001
                if _drawn(t):
                    changed |= _rewrap(t, t.get_window_extent(renderer).width, box.width)
            if _drawn(ax.yaxis.label):
                changed |= _rewrap(ax.yaxis.label, ax.yaxis.label.get_window_extent(renderer).height, box.height)
            changed |= _fit_ticks(ax.xaxis, renderer)
            changed |= _fit_legend(ax, renderer)
        for leg in fig.legends:
            changed |= _fit_figure_legend(fig, leg, renderer)
        sup = fig._suptitle  # noqa: SLF001
        if sup is not None and _drawn(sup):
            changed |= _rewrap(sup, sup.get_window_extent(renderer).width, fig.bbox.width - 8)
        # growing unwraps the texts: only in the first half of the rounds, so that the others can fit them again
        if not changed and (round_ >= FIT_ROUNDS // 2 or not _grow_flat_panels(fig, renderer)):
            return


def integer_x(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
