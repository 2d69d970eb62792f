"""What the noisy-label setting's record side and training side share: the model-selection rule's name and the
summary of the training images' weights that a record keeps (`label_weights`)."""

from __future__ import annotations

import numpy as np

SELECTION_RULE = "final"
# the weight bins of `label_weights`: [EDGES[i], EDGES[i+1]), the last one open above
EDGES = (*(round(0.1 * i, 1) for i in range(20)), 2.0, 3.0, 5.0)


def weight_summary(weights: np.ndarray, corrupted: np.ndarray, seconds: float, batch: int) -> dict:
    """`label_weights` of a run: per-bin counts of the training images' weights, corrupted and clean apart."""
    bins = np.searchsorted(EDGES, weights, side="right") - 1
    count = lambda mask: np.bincount(bins[mask], minlength=len(EDGES)).tolist()
    return {
        "edges": list(EDGES),
        "corrupted": count(corrupted),
        "clean": count(~corrupted),
        "mean_corrupted": float(weights[corrupted].mean()) if corrupted.any() else None,
        "mean_clean": float(weights[~corrupted].mean()) if (~corrupted).any() else None,
        "batch": batch,
        "seconds": round(seconds, 3),
    }
