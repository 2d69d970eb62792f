"""The rankings and rank-test p-values the results index (index.py) keeps, so that a protocol whose records
did not change is not ranked again, and one that gained a record is re-ranked by testing that record's
pairs only, in this process or the next."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..stats.ranking import PValueCache, Ranked

_BATCH = 500  # keys per query
_KEPT_RANKINGS = 5000


class StoredPValues(PValueCache):
    """Rank-test p-values by pair of record contents, kept in the index too: a page that starts from a built
    index re-ranks a protocol after one new record by testing only that record's pairs."""

    def __init__(self, index: RankMemory):
        super().__init__()
        self.index = index

    def recall(self, members: Sequence) -> None:
        wanted = [m for m in members if m not in self.members]
        found = [row for i in range(0, len(wanted), _BATCH) for row in self.index.pairs_of(wanted[i : i + _BATCH])]
        super().add([(a, b) for a, b, _ in found], [p for _, _, p in found])

    def add(self, pairs, pvalues) -> None:
        super().add(pairs, pvalues)
        self.index.write("INSERT OR REPLACE INTO pvalues VALUES (?, ?, ?)", [(*ab, p) for ab, p in zip(pairs, pvalues)])


class RankMemory:
    """The index's rankings and p-values: a part of ResultsIndex, which provides the connection, its lock,
    `_guarded`, `rows` and `content_keys`."""

    conn: Any
    _lock: Any
    _ranks: dict[str, list[Ranked]]
    rows: Callable[[], tuple[list[dict], list]]
    _guarded: Callable
    content_keys: Callable[[Sequence[str]], list[int]]

    def ranking_key(
        self, setting: str, paths: Sequence[str], entries: Sequence[str], means: Sequence[float], alpha: float
    ) -> str:
        """What a ranking of these members depends on: their records' bytes, names and means, in order."""
        with self._lock:
            members = [[k, e, repr(float(m))] for k, e, m in zip(self.content_keys(paths), entries, means)]
            return hashlib.sha256(json.dumps([setting, repr(alpha), members]).encode()).hexdigest()

    def cached_ranking(self, key: str) -> list[Ranked] | None:
        """A ranking computed before, in this process or another; a protocol whose records did not change is
        not ranked again."""
        with self._lock:
            if key not in self._ranks:
                sql = "SELECT ranked FROM ranks WHERE key = ?"
                row = self._guarded(lambda: self.conn.execute(sql, (key,)).fetchone())
                if row is None:
                    return None
                self._ranks[key] = [Ranked(*r) for r in json.loads(row[0])]
            return self._ranks[key]

    def remember_ranking(self, key: str, ranked: list[Ranked]) -> None:
        value = json.dumps([[r.rank, r.p_vs_leader, r.leader] for r in ranked])
        with self._lock:
            self.write("INSERT OR REPLACE INTO ranks VALUES (?, ?, ?)", [(key, value, time.time())])
            self._ranks[key] = ranked

    def pairs_of(self, leaders: Sequence[int]) -> list[tuple[int, int, float]]:
        sql = f"SELECT a, b, p FROM pvalues WHERE a IN ({', '.join('?' * len(leaders))})"
        return self._guarded(lambda: self.conn.execute(sql, list(leaders)).fetchall())

    def write(self, sql: str, rows: list[tuple]) -> None:
        """Rows written in one transaction."""

        def run():
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(sql, rows)

        self._guarded(run)

    def _prune_rankings(self, stale_pairs: bool) -> None:
        self._ranks.clear()
        self.conn.execute(
            "DELETE FROM ranks WHERE key NOT IN (SELECT key FROM ranks ORDER BY added DESC LIMIT ?)", (_KEPT_RANKINGS,)
        )
        if stale_pairs:  # records changed or went: their pairs would only take space
            keys = self.content_keys([r["path"] for r in self.rows()[0]])
            self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS shown (key INTEGER PRIMARY KEY)")
            self.conn.execute("DELETE FROM shown")
            self.conn.executemany("INSERT OR IGNORE INTO shown VALUES (?)", [(k,) for k in keys])
            kept = "(SELECT key FROM shown)"
            self.conn.execute(f"DELETE FROM pvalues WHERE a NOT IN {kept} OR b NOT IN {kept}")
