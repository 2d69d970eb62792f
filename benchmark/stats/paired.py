"""Paired comparisons of two methods scored on the same units (episodes), unit by unit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


@dataclass(frozen=True)
class PairedTest:
    n: int
    mean_diff: float
    t_pvalue: float
    wilcoxon_pvalue: float


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
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
