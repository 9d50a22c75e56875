"""Confidence intervals of the studies' headline numbers: a mean (Student's t), a paired difference, and the
slope of a straight-line fit (ordinary least squares with its t interval).

A paired difference (method b minus method a, seed by seed: same seed, same data) gets its 95 % t interval from
:data:`MIN_PAIRS` pairs on; from fewer the estimate is shown without one, as "too few seeds" (with 2 pairs the t
quantile is 12.7: an interval so wide it says nothing).  A difference whose interval covers 0 is marked
:data:`NOT_SIGNIFICANT`: the seeds cannot tell its sign."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
MIN_PAIRS = 3
NOT_SIGNIFICANT = "n.s."
HOLM_MARK = "†"


def _t(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + LEVEL / 2, df))


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95 % confidence interval and the number of observations behind it."""

    estimate: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 2, signed: bool = False) -> str:
        if self.n == 0 or math.isnan(self.estimate):
            return "-"
        f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
        if math.isnan(self.low):
            return f"{f.format(self.estimate)} (n={self.n})"
        return f"{f.format(self.estimate)} [{f.format(self.low)}, {f.format(self.high)}] (n={self.n})"

    @property
    def excludes_zero(self) -> bool:
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)

    @property
    def p_value(self) -> float:
        """Two-sided p of the paired t test behind the interval (nan without an interval): the standard error is
        the half-width over the t quantile."""
        if self.n < 2 or math.isnan(self.low):
            return math.nan
        se = (self.high - self.low) / (2 * _t(self.n - 1))
        if se == 0:
            return 0.0 if self.estimate != 0 else 1.0
        from scipy.stats import t

        return float(2 * t.sf(abs(self.estimate) / se, self.n - 1))

    @property
    def verdict(self) -> str:
        """A difference's reading: ``higher`` or ``lower`` (the interval excludes 0), ``not significant`` (it
        covers 0), ``too few seeds`` (no interval) or ``no pairs``."""
        if self.n == 0 or math.isnan(self.estimate):
            return "no pairs"
        if math.isnan(self.low):
            return "too few seeds"
        if not self.excludes_zero:
            return "not significant"
        return "higher" if self.estimate > 0 else "lower"

    def difference_text(self, digits: int = 2, with_n: bool = True) -> str:
        """A difference as ``+3.10 [+2.01, +4.19] (n=3)``, with ``n.s.`` after it when the interval covers 0, or
        ``+0.67 (n=2: too few seeds for an interval)``."""
        if self.n == 0 or math.isnan(self.estimate):
            return "-"
        est = f"{self.estimate:+.{digits}f}"
        if math.isnan(self.low):
            return f"{est} (n={self.n}: too few seeds for an interval)"
        out = f"{est} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]" + (f" (n={self.n})" if with_n else "")
        return out if self.excludes_zero else f"{out} {NOT_SIGNIFICANT}"


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.array([float(v) for v in values if v is not None and not math.isnan(float(v))])


def mean_interval(values: Sequence[float | None]) -> Interval:
    """Mean with its t interval (no interval from fewer than 2 values)."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if n == 1:
        return Interval(float(x[0]), math.nan, math.nan, 1)
    half = _t(n - 1) * x.std(ddof=1) / math.sqrt(n)
    return Interval(float(x.mean()), float(x.mean() - half), float(x.mean() + half), n)


def difference_interval(differences: Sequence[float | None]) -> Interval:
    """Mean of per-seed differences with its t interval from :data:`MIN_PAIRS` of them on."""
    iv = mean_interval(differences)
    return iv if iv.n >= MIN_PAIRS else Interval(iv.estimate, math.nan, math.nan, iv.n)


def paired_difference(pairs: Sequence[tuple[float | None, float | None]]) -> Interval:
    """Mean of b - a over the pairs where both are known, with its t interval (:func:`difference_interval`)."""
    return difference_interval([b - a for a, b in pairs if a is not None and b is not None])


def _one_per_seed(values: Iterable[tuple[int, float | None]]) -> dict[int, float | None]:
    by_seed: dict[int, list[float | None]] = {}
    for seed, v in values:
        by_seed.setdefault(seed, []).append(v)
    return {seed: vs[0] for seed, vs in by_seed.items() if len(vs) == 1}


def paired_by_seed(a: Iterable[tuple[int, float | None]], b: Iterable[tuple[int, float | None]]) -> Interval:
    """b - a over the seeds both have, from (seed, value) per run (:func:`paired_difference`); a seed with
    several runs on either side is no pair."""
    a, b = _one_per_seed(a), _one_per_seed(b)
    return paired_difference([(a[s], b[s]) for s in sorted(a.keys() & b.keys())])


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (a family of comparisons): the k-th smallest p times
    (m - k + 1), made monotone, capped at 1; nan stays nan and does not count in m."""
    known = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    out = [math.nan] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - k) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class LineFit:
    slope: Interval
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope.estimate * x


def line_fit(x: Sequence[float], y: Sequence[float]) -> LineFit:
    """Least-squares line y = a + b x with the t interval of b (n - 2 degrees of freedom)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return LineFit(Interval(math.nan, math.nan, math.nan, n), math.nan)
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    b = ((x - xm) * (y - ym)).sum() / sxx
    a = ym - b * xm
    if n < 3:
        return LineFit(Interval(float(b), math.nan, math.nan, n), float(a))
    resid = y - (a + b * x)
    se = math.sqrt((resid ** 2).sum() / (n - 2) / sxx)
    half = _t(n - 2) * se
    return LineFit(Interval(float(b), float(b - half), float(b + half), n), float(a))


@dataclass(frozen=True)
class CI:
    """A table cell: an :class:`Interval` shown as ``estimate [low, high] (n=...)``."""

    interval: Interval
    digits: int = 2
    signed: bool = False
    holm_p: float = math.nan  # the Holm-adjusted p within its table's family (nan: not adjusted)

    @property
    def loses_holm(self) -> bool:
        """The interval excludes 0 but the difference is not significant once its family is adjusted for."""
        return self.interval.excludes_zero and not math.isnan(self.holm_p) and self.holm_p >= 1 - LEVEL

    def text(self) -> str:
        """A mean as ``estimate [low, high] (n=...)``; a difference (``signed``) with its mark (n.s., too few,
        and :data:`HOLM_MARK` when it does not survive Holm's adjustment)."""
        if self.signed:
            return self.interval.difference_text(self.digits) + (f" {HOLM_MARK}" if self.loses_holm else "")
        return self.interval.text(self.digits)

    def csv_fields(self) -> dict:
        iv = self.interval
        num = lambda v: "" if math.isnan(v) else v  # noqa: E731
        out = {"mean": num(iv.estimate), "low": num(iv.low), "high": num(iv.high), "n": iv.n}
        holm = {} if math.isnan(self.holm_p) else {"holm_p": self.holm_p}
        return out | ({"verdict": iv.verdict} if self.signed else {}) | holm


def familywise(cells: Sequence[CI]) -> tuple[list[CI], str]:
    """The cells with their Holm-adjusted p over the family of those that have an interval, and the note that
    says how many comparisons the family holds ("" with fewer than two)."""
    from dataclasses import replace

    ps = [c.interval.p_value for c in cells]
    m = sum(not math.isnan(p) for p in ps)
    if m < 2:
        return list(cells), ""
    adjusted = [replace(c, holm_p=q) for c, q in zip(cells, holm(ps))]
    lost = sum(c.loses_holm for c in adjusted)
    what = (f"{HOLM_MARK}: {lost} difference{'s' * (lost > 1)} whose interval excludes 0 but not significant once "
            f"Holm's method adjusts for the {m} comparisons" if lost else
            f"every difference whose interval excludes 0 stays significant after Holm's adjustment for the {m} "
            "comparisons")
    return adjusted, f"{m} intervals in this table, each at 95 %; {what} (family-wise error 5 %)."
