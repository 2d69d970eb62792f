"""Ranks with ties over paired score vectors, in the manner of the Meta-Dataset leaderboard: the entry
with the best mean, and every entry not significantly different from it, share rank 1; the rule is
applied again to the entries left over for rank 2, and so on. Plus the average rank over protocols.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Generator, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import stats as _st

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
    return rank_many([(vectors, means, names)], alpha)[0]


Problem = tuple[Sequence[np.ndarray], Sequence[float], Sequence[str]]  # one ranking: vectors, means, names


_FEW_NEW = 4  # new members of a known ranking are tested against all others up front, up to this many


class PValueCache:
    """Rank-test p-values by (leader, other), for members named by a key of their content (a record's
    sha256), kept between rankings: re-ranking a protocol after one record changed tests only the pairs
    that involve that record. Bounded: past `limit` pairs it starts again."""

    def __init__(self, limit: int = 1_000_000):
        self.limit = limit
        self.pvalues: dict[tuple[Hashable, Hashable], float] = {}
        self.members: set[Hashable] = set()

    def recall(self, members: Sequence[Hashable]) -> None:
        """Called before ranking these members: a cache kept elsewhere (the results index) loads their pairs."""

    def add(self, pairs: Sequence[tuple[Hashable, Hashable]], pvalues: Sequence[float]) -> None:
        if len(self.pvalues) + len(pairs) > self.limit:
            self.pvalues.clear()
            self.members.clear()
        self.pvalues.update(zip(pairs, pvalues))
        self.members.update(k for pair in pairs for k in pair)


def rank_many(
    problems: Sequence[Problem],
    alpha: float = RANK_ALPHA,
    cache: PValueCache | None = None,
    keys: Sequence[Sequence[Hashable]] | None = None,
) -> list[list[Ranked]]:
    """Several independent rankings (one per protocol), computed together: each round, the tests of every
    ranking's leader against its remaining entries go to scipy in one batch, so a leaderboard of many
    protocols costs about as many scipy calls as its longest ranking has ranks. With a `cache` and each
    member's content `keys`, p-values known from earlier rankings are not computed again, and a ranking
    where only a few members are new tests those against all the others in one batch up front."""
    cache = cache if cache is not None and keys is not None else PValueCache()
    ids = [
        list(keys[k]) if keys is not None else [(id(cache), k, i) for i in range(len(p[0]))]
        for k, p in enumerate(problems)
    ]
    vectors = {key: v for k, (vs, _, _) in enumerate(problems) for key, v in zip(ids[k], vs)}
    if keys is not None:
        cache.recall(list(vectors))

    def tests(pairs: list[tuple[Hashable, Hashable]]) -> None:
        todo = list(dict.fromkeys(pair for pair in pairs if pair not in cache.pvalues))
        if todo:
            cache.add(todo, pair_pvalues([(vectors[a], vectors[b]) for a, b in todo]))

    up_front = []
    for members in ids:
        fresh = [key for key in members if key not in cache.members]
        if 0 < len(fresh) <= _FEW_NEW < len(members):
            up_front += [pair for x in fresh for y in members if x != y for pair in ((x, y), (y, x))]
    tests(up_front)
    steps = [_ranking(means, names, alpha) for _, means, names in problems]
    results: list[list[Ranked]] = [[] for _ in problems]
    asks: dict[int, tuple[int, list[int]]] = {}

    def advance(k: int, answer: list[float] | None) -> None:
        try:
            asks[k] = steps[k].send(answer)  # type: ignore[arg-type]
        except StopIteration as done:
            results[k] = done.value
            asks.pop(k, None)

    for k in range(len(problems)):
        advance(k, None)
    while asks:
        rounds = {k: [(ids[k][leader], ids[k][i]) for i in others] for k, (leader, others) in asks.items()}
        tests([pair for pairs in rounds.values() for pair in pairs])
        for k, pairs in rounds.items():
            advance(k, [cache.pvalues[pair] for pair in pairs])
    return results


def _ranking(
    means: Sequence[float], names: Sequence[str], alpha: float
) -> Generator[tuple[int, list[int]], list[float], list[Ranked]]:
    """The ranking rule, asking for the rank test's p-values: yields (leader, the others left) and is sent
    the leader's p-value against each of them."""
    out: list[Ranked | None] = [None] * len(means)
    remaining = list(range(len(means)))
    rank = 0
    while remaining:
        rank += 1
        # Equal means are broken by name only so that the outcome does not depend on file order.
        leader = min(remaining, key=lambda i: (-means[i], names[i]))
        out[leader] = Ranked(rank, math.nan, leader)
        others = [i for i in remaining if i != leader]
        pvalues = (yield leader, others) if others else []
        tied = {leader}
        for i, p in zip(others, pvalues):
            if not (p < alpha):  # a p-value that cannot be computed (NaN) is no evidence of a difference
                out[i] = Ranked(rank, p, leader)
                tied.add(i)
        remaining = [i for i in remaining if i not in tied]
    return out  # type: ignore[return-value]


# Up to this many units scipy decides between its exact, permutation and normal-approximation p-values from
# the whole batch it is given, past it per comparison (always the normal approximation); so only longer
# vectors are tested in batches, and the p-values are the pairwise ones (`paired_test`'s), bit for bit.
_BATCH_MIN_UNITS = 51


def pair_pvalues(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """The rank test's p-value of each (a, b), as `paired_test(a, b)` gives it; one scipy call for all the
    pairs whose vectors have the same length."""
    out = [math.nan] * len(pairs)
    batches: dict[int, list[int]] = {}
    for k, (a, b) in enumerate(pairs):
        if np.ndim(a) != 1 or np.size(a) < _BATCH_MIN_UNITS or np.shape(a) != np.shape(b):
            out[k] = getattr(_quiet_test(np.asarray(a, np.float64), np.asarray(b, np.float64)), RANK_TEST_KEY)
        else:
            batches.setdefault(np.size(a), []).append(k)
    for batch in batches.values():
        x = np.asarray([pairs[k][0] for k in batch], np.float64)
        y = np.asarray([pairs[k][1] for k in batch], np.float64)
        differ = np.any(x != y, axis=1)
        p = np.ones(len(batch))  # all differences zero: p = 1, as paired_test has it
        if differ.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                p[differ] = _st.wilcoxon(x[differ], y[differ], zero_method="wilcox", axis=1).pvalue
        for k, value in zip(batch, p.tolist()):
            out[k] = value
    return out


def _quiet_test(x: np.ndarray, y: np.ndarray) -> PairedTest:
    with warnings.catch_warnings():
        # scipy warns when the differences are all alike (the t-test's spread is ~0);
        # ranking uses only the signed-rank p-value, so the warning is noise here.
        warnings.simplefilter("ignore", RuntimeWarning)
        return paired_test(x, y)


def average_ranks(ranks: Mapping[K, Mapping[str, int]]) -> dict[K, float]:
    """{entry: {protocol: rank}} -> {entry: mean rank over the protocols it has}, as the Meta-Dataset
    leaderboard averages its per-dataset ranks with ties."""
    return {entry: float(np.mean(list(by_protocol.values()))) for entry, by_protocol in ranks.items() if by_protocol}
