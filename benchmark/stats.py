"""Confidence intervals and paired comparisons over per-episode accuracies.

Every interval here is a two-sided 95% Student-t interval, mean +/- t_{0.975, n-1} * s / sqrt(n),
with s the sample standard deviation (ddof=1). With one value there is no spread to estimate, so
the half-width is reported as NaN rather than as a misleading zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st


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
        return f"{100 * self.mean:.2f} +/- {100 * self.ci95:.2f}% (n={self.n})"


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
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
    q = float(_st.t.ppf(0.5 + level / 2, df=n - 1))
    return Interval(mean, q * std / math.sqrt(n), n, std)


@dataclass(frozen=True)
class PairedTest:
    n: int
    mean_diff: float
    t_pvalue: float
    wilcoxon_pvalue: float


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Compare two methods evaluated on the same episodes, episode by episode (a - b)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired test needs two equal-length 1-D sequences, got {x.shape} and {y.shape}")
    d = x - y
    if np.all(d == 0):
        return PairedTest(int(d.size), 0.0, 1.0, 1.0)
    t_p = float(_st.ttest_rel(x, y).pvalue)
    w_p = float(_st.wilcoxon(x, y, zero_method="wilcox").pvalue)
    return PairedTest(int(d.size), float(d.mean()), t_p, w_p)
