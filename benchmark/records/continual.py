"""The continual-learning metrics of GEM (Lopez-Paz & Ranzato 2017) from an accuracy matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GemMetrics:
    acc: float  # mean over tasks of the accuracy after the last task
    bwt: float  # backward transfer: how learning later tasks changed earlier ones (negative: forgetting)
    fwt: float | None  # forward transfer over a random model's accuracy b; None without b or with one task


def gem_metrics(r: np.ndarray | list, b: np.ndarray | list | None = None) -> GemMetrics:
    """ACC, BWT and FWT of a T x T matrix R, R[i][j] the accuracy on task j after training on tasks 0..i:

    ACC = 1/T sum_j R[T-1][j];  BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j]);
    FWT = 1/(T-1) sum_{j>0} (R[j-1][j] - b[j]),

    GEM's definitions: BWT and FWT average over the T-1 tasks for which they are defined (the last task has no
    later task to forget it; the first has no earlier one to transfer to it)."""
    m = np.asarray(r, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square and non-empty, not of shape {m.shape}")
    t = m.shape[0]
    acc = float(m[-1].mean())
    if t == 1:
        return GemMetrics(acc, 0.0, None)
    bwt = float(np.mean([m[-1, j] - m[j, j] for j in range(t - 1)]))
    fwt = None
    if b is not None:
        base = np.asarray(b, dtype=np.float64)
        if base.shape != (t,):
            raise ValueError(f"b must hold one accuracy per task ({t}), not shape {base.shape}")
        fwt = float(np.mean([m[j - 1, j] - base[j] for j in range(1, t)]))
    return GemMetrics(acc, bwt, fwt)
