"""The interval every record reports, and the one way it is written as text.

Every interval here is a two-sided 95% Student-t interval, mean +/- t_{0.975, n-1} * s / sqrt(n),
with s the sample standard deviation (ddof=1). With one value there is no spread to estimate, so
the half-width is reported as NaN rather than as a misleading zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    ci95: float  # half-width
    n: int
    std: float

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95

    def __str__(self) -> str:
        return f"{format_ci(self.mean, self.ci95)}% (n={self.n})"


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("mean_ci needs a non-empty 1-D sequence of values")
    if not np.all(np.isfinite(x)):
        raise ValueError("mean_ci got a non-finite value")
    n = int(x.size)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, n, math.nan)
    std = float(x.std(ddof=1))
    return Interval(mean, _t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n), n, std)


@lru_cache(maxsize=1024)
def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile; cached, since every record of a protocol asks for the same one (scipy's costs
    about 0.1 ms, which checking thousands of records would pay several times each)."""
    from scipy import stats  # imported here: scipy.stats costs a second, and `bench list` needs no interval

    return float(stats.t.ppf(p, df=df))


def format_ci(
    mean: float, ci95: float | None, unicode: bool = False, scale: float = 100.0, signed: bool = False
) -> str:
    """ "98.61 +/- 0.21" from fractions (mean 0.9861, half-width 0.0021); "n/a" for a missing interval.
    `unicode` writes ± (the page), `signed` a leading sign (differences), `scale` 1 for values already
    in points."""
    pm = "±" if unicode else "+/-"
    m = f"{scale * mean:+.2f}" if signed else f"{scale * mean:.2f}"
    if ci95 is None or (isinstance(ci95, float) and math.isnan(ci95)):
        return f"{m} {pm} n/a"
    return f"{m} {pm} {scale * ci95:.2f}"
