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

    def text(self) -> str:
        """A mean as ``estimate [low, high] (n=...)``; a difference (``signed``) with its mark (n.s., too few)."""
        if self.signed:
            return self.interval.difference_text(self.digits)
        return self.interval.text(self.digits)

    def csv_fields(self) -> dict:
        iv = self.interval
        num = lambda v: "" if math.isnan(v) else v  # noqa: E731
        out = {"mean": num(iv.estimate), "low": num(iv.low), "high": num(iv.high), "n": iv.n}
        return out | ({"verdict": iv.verdict} if self.signed else {})
