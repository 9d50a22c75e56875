"""Aggregation over seeds, and the table object every study table is: cells computed once, rendered as
markdown, HTML or CSV.

A :class:`Table` holds a header and rows of cells; a cell is text or a :class:`Stat` (the values of the runs
behind it, their mean, std and n computed once, optionally the paired difference to a baseline with its 95 %
interval, :class:`~kdlab.analysis.stats.Interval`) or a :class:`Compare`
(a published value next to kdlab's :class:`Stat`), a :class:`Value` (one number, e.g. the best of a column's
means) or a :class:`Strong` (a cell shown bold).  Renderers only format.

A :class:`Document` is a list of blocks - :class:`Heading`, :class:`Paragraph`, :class:`Table` (and any object with
``to_markdown()`` and ``to_html()``, e.g. the report's figures) - rendered as markdown (``results.md``,
``report.md``) or HTML (``report.html``) from the same objects: a table is never re-parsed from its markdown.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdlab.analysis.stats import Interval, difference_interval, paired_by_seed
from kdlab.core.text import markdown_table


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and count, ignoring missing values."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mu = sum(xs) / n
    sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return mu, sd, n


def fmt_cell(values: Sequence[float], digits: int = 2) -> str:
    mu, sd, n = mean_std(values)
    if n == 0:
        return "-"
    if n == 1:  # one run has no spread to show
        return f"{mu:.{digits}f} (n=1)"
    return f"{mu:.{digits}f} ± {sd:.{digits}f} (n={n})"


def _missing(v: Any) -> str | None:
    """Why a run's value does not count: None for a number."""
    if v is None:
        return "not recorded"
    return "NaN" if isinstance(v, float) and math.isnan(v) else None


@dataclass(frozen=True)
class Stat:
    """The runs behind one table cell: mean, sample std and n over their values, and, when given, the paired
    difference to the baseline column (seed by seed, with its 95 % t interval and significance mark).  Made from
    runs (:meth:`of_runs`), it also knows the seeds of its values and the runs left out, ``dropped`` as
    (seed, why), so that a table can say why a cell has fewer values than its column."""

    values: tuple[float, ...]
    digits: int = 2
    difference: Interval | None = None
    seeds: tuple[int, ...] = ()
    dropped: tuple[tuple[int, str], ...] = ()
    mean: float = field(init=False)
    std: float = field(init=False)
    n: int = field(init=False)

    def __post_init__(self):
        mu, sd, n = mean_std(self.values)
        object.__setattr__(self, "mean", mu)
        object.__setattr__(self, "std", sd)
        object.__setattr__(self, "n", n)

    @classmethod
    def of(cls, values: Iterable[float], digits: int = 2) -> Stat:
        xs = tuple(float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
        return cls(xs, digits)

    @classmethod
    def of_runs(cls, runs: Iterable[tuple[int, Any]], digits: int = 2, baseline: Stat | None = None) -> Stat:
        """From (seed, value) per run: a value that is missing or NaN is left out and kept in ``dropped``.  With
        a ``baseline`` cell, the paired difference to it (this minus it, over the seeds both have)."""
        runs = sorted(runs, key=lambda sv: sv[0])
        kept = [(seed, float(v)) for seed, v in runs if _missing(v) is None]
        dropped = tuple((seed, why) for seed, v in runs if (why := _missing(v)) is not None)
        difference = None if baseline is None else paired_by_seed(zip(baseline.seeds, baseline.values), kept)
        return cls(tuple(v for _, v in kept), digits, difference, tuple(seed for seed, _ in kept), dropped)

    @property
    def delta(self) -> float | None:
        """The paired difference's estimate (None without one)."""
        d = self.difference
        return None if d is None or d.n == 0 else d.estimate

    def text(self) -> str:
        if self.n == 0:
            return "-"
        d = self.digits
        spread = f" ± {self.std:.{d}f}" if self.n > 1 else ""  # one run has no spread to show
        out = f"{self.mean:.{d}f}{spread} (n={self.n})"
        if self.delta is None:
            return out
        return out + f" ({self.difference.difference_text(d, with_n=self.difference.n != self.n)})"

    def csv_fields(self) -> dict[str, Any]:
        out = {"mean": _num(self.mean), "std": _num(self.std), "n": self.n, "delta": _num(self.delta)}
        if self.delta is not None:
            out |= {"low": _num(self.difference.low), "high": _num(self.difference.high),
                    "verdict": self.difference.verdict}
        return out


@dataclass(frozen=True)
class Difference(Stat):
    """A cell of paired differences (one value per seed: method b minus method a on the same seed and data), shown
    as their mean with its 95 % t interval and the not-significant mark: ``+0.67 [-1.63, +2.96] (n=3) n.s.``."""

    @property
    def interval(self) -> Interval:
        return difference_interval(self.values)

    def text(self) -> str:
        return self.interval.difference_text(self.digits)

    def csv_fields(self) -> dict[str, Any]:
        iv = self.interval
        return {"mean": _num(self.mean), "std": _num(self.std), "n": self.n, "low": _num(iv.low),
                "high": _num(iv.high), "verdict": iv.verdict}


@dataclass(frozen=True)
class Compare:
    """A published value beside kdlab's result: paper | kdlab mean ± std (n) | kdlab - paper."""

    paper: float | None
    paper_std: float | None
    ours: Stat

    @property
    def difference(self) -> float | None:
        if self.paper is None or self.ours.n == 0:
            return None
        return self.ours.mean - self.paper

    def text(self) -> str:
        d = self.ours.digits
        paper = "-" if self.paper is None else f"{self.paper:.{d}f}" + (
            f" ± {self.paper_std:.{d}f}" if self.paper_std is not None else "")
        ours = self.ours.text()
        diff = "" if self.difference is None else f" ({self.difference:+.{d}f})"
        return f"{paper} / {ours}{diff}"

    def csv_fields(self) -> dict[str, Any]:
        return {"paper": _num(self.paper), "paper_std": _num(self.paper_std), **self.ours.csv_fields(),
                "difference": _num(self.difference)}


@dataclass(frozen=True)
class Value:
    """One number in a cell (e.g. the best or the average of a column's means): ``-`` when missing."""

    value: float | None
    digits: int = 2

    def text(self) -> str:
        missing = self.value is None or (isinstance(self.value, float) and math.isnan(self.value))
        return "-" if missing else f"{self.value:.{self.digits}f}"

    def csv_fields(self) -> dict[str, Any]:
        return {"mean": _num(self.value)}


@dataclass(frozen=True)
class Strong:
    """A cell shown bold: ``**text**`` in markdown, ``<strong>`` in HTML; its numbers (if any) in the CSV."""

    cell: str | Stat | Compare | Value

    def text(self) -> str:
        return f"**{cell_text(self.cell)}**"

    def plain(self) -> str:
        return cell_text(self.cell)

    def csv_fields(self) -> dict[str, Any]:
        return {} if isinstance(self.cell, str) else self.cell.csv_fields()


Cell = str | Stat | Compare | Value | Strong


def _num(v: float | None) -> float | str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else v


def cell_text(c: Cell) -> str:
    return c if isinstance(c, str) else c.text()


def cell_plain(c: Cell) -> str:
    """The cell's text without markdown emphasis (the CSV's)."""
    return c.plain() if isinstance(c, Strong) else cell_text(c)


def cell_html(c: Cell) -> str:
    """The cell's text, escaped: a ``|`` or ``*`` in a cell is shown as it is; only :class:`Strong` is bold."""
    if isinstance(c, Strong):
        return f"<strong>{html.escape(c.plain())}</strong>"
    return html.escape(cell_text(c))


def _stat_in(c: Cell) -> Stat | None:
    if isinstance(c, Strong):
        c = c.cell
    if isinstance(c, Compare):
        c = c.ours
    return c if isinstance(c, Stat) else None


def _seeds_text(seeds: Iterable[int]) -> str:
    seeds = sorted(seeds)
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _fewer_why(s: Stat, column_seeds: set[int]) -> str:
    """Why a cell has fewer values than its column: the runs it left out, else the seeds it has no run of."""
    if s.dropped:
        by_why: dict[str, list[int]] = {}
        for seed, why in s.dropped:
            by_why.setdefault(why, []).append(seed)
        return "; ".join(f"{why} for {_seeds_text(seeds)}" for why, seeds in by_why.items())
    absent = column_seeds - set(s.seeds)
    if s.seeds and absent:
        return f"no finished run of {_seeds_text(absent)}"
    return "fewer finished runs"


@dataclass
class Table:
    """A header and rows of cells; ``title`` and ``note`` are rendered above and below, and after the note
    :meth:`n_note`, which says why a cell has fewer values than the others in its column."""

    header: list[str]
    rows: list[list[Cell]]
    title: str = ""
    note: str = ""

    def n_note(self) -> str:
        """Per cell whose n is below its column's largest: which cell, its n, and why (a value NaN or not
        recorded for some seeds, or no finished run of them); empty when every column's n is even.  A cell
        repeated along its row (the student alone) is listed once, with its columns."""
        found: dict[tuple[str, str], list[str]] = {}
        for j, col in enumerate(self.header[1:], start=1):
            cells = [(r, s) for r in self.rows if j < len(r) and (s := _stat_in(r[j])) is not None]
            most = max((s.n for _, s in cells), default=0)
            column_seeds = {seed for _, s in cells if s.n == most for seed in s.seeds}
            for r, s in cells:
                if s.n < most and (s.n or s.dropped):
                    label = " / ".join(cell_plain(c) for c in r if isinstance(c, str) or
                                       (isinstance(c, Strong) and isinstance(c.cell, str)))
                    found.setdefault((label, f"n={s.n} of {most}: {_fewer_why(s, column_seeds)}"), []).append(col)
        if not found:
            return ""
        items = [f"{label or 'row'}, {', '.join(cols)}: {what}" for (label, what), cols in found.items()]
        return "Cells with fewer values than their column: " + "; ".join(items) + "."

    def notes(self) -> list[str]:
        """The note's paragraphs (separated by a blank line), then :meth:`n_note`."""
        return [n for n in (*self.note.split("\n\n"), self.n_note()) if n]

    def to_markdown(self) -> str:
        # a "|" inside a cell is escaped, so that markdown readers keep the cell whole
        body = markdown_table(self.header, [[cell_text(c).replace("|", "\\|") for c in r] for r in self.rows])
        parts = [self.title] if self.title else []
        parts.append(body)
        parts += self.notes()
        return "\n\n".join(parts)

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in self.header)
        trs = "".join("<tr>" + "".join(f"<td>{cell_html(c)}</td>" for c in r) + "</tr>\n"
                      for r in self.rows)
        out = f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{trs}</tbody>\n</table>"
        if self.title:
            out = f"<p>{html.escape(self.title)}</p>\n" + out
        out += "".join(f"\n<p>{html.escape(n)}</p>" for n in self.notes())
        return out

    def to_csv(self) -> str:
        """One line per cell: row label (the first cell), column, and the cell's numbers or text."""
        buf = io.StringIO()
        fields = ["row", "column", "text", "paper", "paper_std", "mean", "std", "n", "delta", "difference", "low",
                  "high", "verdict", "holm_p"]
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            label = cell_plain(r[0]) if r else ""
            for col, c in zip(self.header[1:], r[1:]):
                row = {"row": label, "column": col, "text": cell_plain(c)}
                if not isinstance(c, str):
                    row.update(c.csv_fields())
                w.writerow(row)
        return buf.getvalue()


# --- documents: the blocks results.md and the report are made of ------------------------------------------------

def inline_html(text: str) -> str:
    """A paragraph's or heading's text as HTML: escaped, with markdown's **bold**, `code` and *emphasis*."""
    s = html.escape(text, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", s)


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 3

    def to_markdown(self) -> str:
        return f"{'#' * self.level} {self.text}"

    def to_html(self) -> str:
        return f"<h{self.level}>{inline_html(self.text)}</h{self.level}>"


@dataclass(frozen=True)
class Paragraph:
    """Text written in markdown's inline syntax (``code``, **bold**, *emphasis*); one paragraph."""

    text: str

    def to_markdown(self) -> str:
        return self.text

    def to_html(self) -> str:
        return f"<p>{inline_html(' '.join(self.text.splitlines()))}</p>"


def escape_markdown(text: str) -> str:
    """Plain text (e.g. a user's label) that markdown shows as it is: backslashes, backticks and each ``*`` or
    ``_`` that could open emphasis (followed by a non-space) are escaped, so "p* (train)" stays readable."""
    return re.sub(r"(\\|`|[*_](?=\S))", r"\\\1", text)


@dataclass(frozen=True)
class Statement:
    """A paragraph of plain text after a bold lead (``**Reading** ...``): the text is escaped for markdown and
    HTML, so that labels in it are shown as they are."""

    lead: str
    text: str

    def to_markdown(self) -> str:
        return f"**{self.lead}** {escape_markdown(self.text)}"

    def to_html(self) -> str:
        return f"<p><strong>{html.escape(self.lead)}</strong> {html.escape(self.text)}</p>"


@dataclass
class Document:
    """Blocks (headings, paragraphs, tables, figures: anything with ``to_markdown()`` and ``to_html()``) in order."""

    blocks: list[Any] = field(default_factory=list)

    def __iter__(self):
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def add(self, *blocks: Any) -> Document:
        self.blocks.extend(b for b in blocks if b is not None)
        return self

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    def to_markdown(self) -> str:
        return "\n\n".join(b.to_markdown() for b in self.blocks)

    def to_html(self) -> str:
        return "\n".join(b.to_html() for b in self.blocks)
