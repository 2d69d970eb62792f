"""Ranks with ties over paired score vectors, in the manner of the Meta-Dataset leaderboard: the entry
with the best mean, and every entry not significantly different from it, share rank 1; the rule is
applied again to the entries left over for rank 2, and so on. Plus the average rank over protocols.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .paired import PairedTest, paired_test

K = TypeVar("K", bound=Hashable)  # what an average rank is keyed by: an entry

# Per-unit accuracies (per test episode, per image) are bounded, discrete (multiples of 1 / (ways * queries)) and often
# skewed near the ceiling, so a paired t-test's normality assumption is doubtful, above all on
# short protocols; the signed-rank test needs only symmetric differences. We never fall back to
# the t-test: paired_test already handles the one case Wilcoxon cannot (all differences zero).
RANK_TEST = "two-sided Wilcoxon signed-rank test"
RANK_TEST_KEY = "wilcoxon_pvalue"
RANK_ALPHA = 0.05
RANKING_RULE = (
    f"Ranks with ties, within each protocol: the entry with the highest mean accuracy and every "
    f"entry not significantly different from it ({RANK_TEST}, paired by test episode on per-episode "
    f"accuracy averaged over training seeds, α = {RANK_ALPHA}) share rank 1; the rule is repeated on "
    f"the remaining entries for rank 2, and so on. There is no correction for multiple comparisons. "
    f"Only entries evaluated on the same test episodes (same protocol version and episodes "
    f"fingerprint) are ranked together; the others are shown unranked with a note."
)


class NotPairable(ValueError):
    """Two records that were not scored on the same units (test episodes)."""


@dataclass(frozen=True)
class Ranked:
    rank: int
    p_vs_leader: float  # NaN for the leader of its rank
    leader: int  # index, in the input, of the entry this one was tested against


def significantly_different(test: PairedTest, alpha: float = RANK_ALPHA) -> bool:
    p = getattr(test, RANK_TEST_KEY)
    # A p-value that cannot be computed is no evidence of a difference.
    return bool(p < alpha) if not math.isnan(p) else False


def rank_vectors(
    vectors: Sequence[np.ndarray], means: Sequence[float], names: Sequence[str], alpha: float = RANK_ALPHA
) -> list[Ranked]:
    out: list[Ranked | None] = [None] * len(vectors)
    remaining = list(range(len(vectors)))
    rank = 0
    while remaining:
        rank += 1
        # Equal means are broken by name only so that the outcome does not depend on file order.
        leader = min(remaining, key=lambda i: (-means[i], names[i]))
        out[leader] = Ranked(rank, math.nan, leader)
        tied = [leader]
        for i in remaining:
            if i == leader:
                continue
            with warnings.catch_warnings():
                # scipy warns when the differences are all alike (the t-test's spread is ~0);
                # ranking uses only the signed-rank p-value, so the warning is noise here.
                warnings.simplefilter("ignore", RuntimeWarning)
                test = paired_test(vectors[leader], vectors[i])
            if not significantly_different(test, alpha):
                out[i] = Ranked(rank, getattr(test, RANK_TEST_KEY), leader)
                tied.append(i)
        remaining = [i for i in remaining if i not in tied]
    return out  # type: ignore[return-value]


def average_ranks(ranks: Mapping[K, Mapping[str, int]]) -> dict[K, float]:
    """{entry: {protocol: rank}} -> {entry: mean rank over the protocols it has}, as the Meta-Dataset
    leaderboard averages its per-dataset ranks with ties."""
    return {entry: float(np.mean(list(by_protocol.values()))) for entry, by_protocol in ranks.items() if by_protocol}
