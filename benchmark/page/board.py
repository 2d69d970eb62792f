"""Leaderboard tables from result records, ranked per protocol with the statistic of each record's setting.

`load(results_dir)` gives every record under a results folder as one pandas table (a row per record)
and a list of the records it had to leave out, each with the reason. It reads them from the results
index (index.py), which re-reads only new and changed records; `load_files` reads every JSON file
instead, and gives the same board. `rank` then gives, within each protocol, ranks with ties
(stats.ranking) over the units the protocol's setting pairs.

The Streamlit page (leaderboards/app.py) only lays out what the functions here compute, so that
everything a reader of the leaderboard relies on can be unit-tested without a browser.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ..records import iter_records, read_record
from ..settings import SETTINGS, load_record
from ..stats.paired import PairedTest, paired_test
from ..stats.ranking import RANK_ALPHA, NotPairable, PValueCache, Ranked, rank_many, rank_vectors
from .index import ResultsIndex
from .rows import (  # noqa: F401  (COLUMNS, ENTRY_KEY, FUTURE_TOLERANCE: defined here before rows.py existed)
    COLUMNS,
    ENTRY_KEY,
    FUTURE_TOLERANCE,
    Skipped,
    frame,
    record_problem,
    record_row,
    units,
)


@dataclass
class Board:
    table: pd.DataFrame
    warnings: list[Skipped] = field(default_factory=list)
    # keyed by the table's "path"; from the index, each record is read from its file when asked for
    records: Mapping[str, dict] = field(default_factory=dict)

    @property
    def settings(self) -> list[str]:
        return settings_to_show()


def settings_to_show() -> list[str]:
    """Every registered setting gets a tab (saying when it is empty); a record cannot add one."""
    return [name for name, _ in sorted(SETTINGS.items(), key=lambda kv: (kv[1].order, kv[0]))]


class IndexedRecords(Mapping[str, dict]):
    """The shown records by relative path, read from their JSON files only when asked for (a detail view, a
    comparison); their unit scores and rankings come from the index."""

    KEPT = 256  # records read lately, kept: a page asks for the same ones on every rerun

    def __init__(self, index: ResultsIndex, paths: Iterable[str]):
        self.index = index
        self._paths = list(paths)
        self._known = set(self._paths)
        self._read: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()  # the page's sessions share a board

    def __getitem__(self, rel: str) -> dict:
        if rel not in self._known:
            raise KeyError(rel)
        with self._lock:
            if rel not in self._read:
                self._read[rel] = read_record(self.index.root / rel)
                if len(self._read) > self.KEPT:
                    self._read.popitem(last=False)
            self._read.move_to_end(rel)
            return self._read[rel]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, rel: object) -> bool:
        return rel in self._known

    def unit_vectors(self, paths: Sequence[str]) -> list[np.ndarray]:
        return self.index.unit_vectors(paths)

    def ranking_key(self, setting, paths, entries, means, alpha) -> str:
        return self.index.ranking_key(setting, paths, entries, means, alpha)

    def cached_ranking(self, key: str) -> list[Ranked] | None:
        return self.index.cached_ranking(key)

    def remember_ranking(self, key: str, ranked: list[Ranked]) -> None:
        self.index.remember_ranking(key, ranked)

    def content_keys(self, paths: Sequence[str]) -> list[int]:
        return self.index.content_keys(paths)

    @property
    def pvalues(self) -> PValueCache:
        return self.index.pvalues


def load(results_dir: str | Path, latest_only: bool = True, index: ResultsIndex | None = None) -> Board:
    """Every record under results_dir as a ranked table; the ones left out go to warnings.

    With latest_only (the default) only the most recent record of each entry (protocol, version,
    method, backbone) is kept; otherwise older ones are listed too, unranked, as superseded.
    The results index (`index`, else the folder's own) is brought up to date first; a board is built
    once per state of the index and rankings once per protocol content.
    """
    results_dir = Path(results_dir)
    if index is None:
        if not results_dir.is_dir():
            return _board([], [], {}, latest_only)
        index = ResultsIndex(results_dir)
    key = ("board", latest_only, index.sync().state)
    board = index.memo.get(key)
    if board is None:
        rows, skipped = index.rows()
        board = _board(rows, skipped, IndexedRecords(index, [r["path"] for r in rows]), latest_only)
        for old in [k for k in index.memo if k[:2] == key[:2]]:
            del index.memo[old]
        index.memo[key] = board
    return Board(board.table.copy(), list(board.warnings), board.records)


def load_files(results_dir: str | Path, latest_only: bool = True) -> Board:
    """`load`, reading and checking every JSON file instead of the index: the reference the index must equal."""
    results_dir = Path(results_dir)
    rows, records, skipped = [], {}, []
    if results_dir.is_dir():
        for path, record, error in iter_records(results_dir):
            rel = path.relative_to(results_dir).as_posix()
            if record is not None and error is None:
                error = record_problem(record, path, results_dir)
            if record is None or error is not None:
                skipped.append(Skipped(rel, error or "unreadable"))
                continue
            rows.append(record_row(record, rel))
            records[rel] = record
    return _board(rows, skipped, records, latest_only)


def _board(rows: list[dict], skipped: list[Skipped], records: Mapping[str, dict], latest_only: bool) -> Board:
    table = frame(rows)
    if latest_only:
        table = table[table["latest"]].reset_index(drop=True)
    return Board(rank(table, records), skipped, records)


# ----------------------------------------------------------------------------- comparing records


def pairing_problem(a: dict, b: dict) -> str | None:
    """Why two records cannot be compared unit by unit; None when they can."""
    if a["setting"] != b["setting"]:
        return f"different settings ({a['setting']} vs {b['setting']})"
    return SETTINGS.get(a["setting"]).pairing_problem(a, b)


def compare(record_a: dict, record_b: dict, vectors: tuple[np.ndarray, np.ndarray] | None = None) -> PairedTest:
    """Paired test of a against b (mean_diff is a - b) on their seed-averaged unit scores (`vectors`, when
    already known, e.g. from the index)."""
    problem = pairing_problem(record_a, record_b)
    if problem:
        raise NotPairable(problem)
    return paired_test(*(vectors or (units(record_a), units(record_b))))


def record_with_units(path: str | Path, results_dir: str | Path) -> tuple[dict, np.ndarray]:
    """A record and its unit scores for a comparison. A record the results folder's index shows was checked
    when it was indexed (the index is brought up to date for this file first), and its unit scores are the
    index's; any other file is read and checked here (load_record's InvalidRecord when it fails)."""
    path, root = Path(path), Path(results_dir)
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = None
    if rel is not None and root.is_dir() and path.suffix == ".json":
        index = ResultsIndex(root)
        try:
            index.sync([rel])
            if index.problem(rel) is None:
                return read_record(path), index.unit_vectors([rel])[0]
        except KeyError:
            pass  # not in the index: read from the file below
        finally:
            index.close()
    record = load_record(path)
    return record, units(record)


def rank_records(records: Sequence[dict], alpha: float = RANK_ALPHA) -> list[Ranked]:
    """Ranks with ties for records that were all scored on the same units (input order kept)."""
    for r in records[1:]:
        problem = pairing_problem(records[0], r)
        if problem:
            raise NotPairable(f"{records[0]['run_id']} and {r['run_id']}: {problem}")
    return rank_vectors(
        [units(r) for r in records],
        [r["summary"]["mean"] for r in records],
        [r["method"]["name"] for r in records],
        alpha,
    )


@runtime_checkable
class RankSource(Protocol):
    """Unit scores and remembered rankings without the records in memory (the index's records)."""

    def unit_vectors(self, paths: Sequence[str]) -> list[np.ndarray]: ...

    def ranking_key(
        self, setting: str, paths: Sequence[str], entries: Sequence[str], means: Sequence[float], alpha: float
    ) -> str: ...

    def cached_ranking(self, key: str) -> list[Ranked] | None: ...

    def remember_ranking(self, key: str, ranked: list[Ranked]) -> None: ...

    def content_keys(self, paths: Sequence[str]) -> list[int]: ...

    @property
    def pvalues(self) -> PValueCache: ...


@dataclass
class _Job:
    members: list[int]  # positions in the table
    setting: str
    paths: list[str]
    entries: list[str]
    means: list[float]


def _rankings(records: Mapping[str, dict], jobs: list[_Job], alpha: float) -> list[list[Ranked]]:
    """Each job's ranking: from the source's memory where its members are unchanged, else all computed at once."""
    if not isinstance(records, RankSource):
        return rank_many([([units(records[p]) for p in j.paths], j.means, j.entries) for j in jobs], alpha)
    keys = [records.ranking_key(j.setting, j.paths, j.entries, j.means, alpha) for j in jobs]
    found = [records.cached_ranking(k) for k in keys]
    todo = [i for i, f in enumerate(found) if f is None]
    if not todo:
        return found  # type: ignore[return-value]
    vectors = iter(records.unit_vectors([p for i in todo for p in jobs[i].paths]))
    problems = [([next(vectors) for _ in jobs[i].paths], jobs[i].means, jobs[i].entries) for i in todo]
    contents = [records.content_keys(jobs[i].paths) for i in todo]
    for i, ranked in zip(todo, rank_many(problems, alpha, records.pvalues, contents)):
        records.remember_ranking(keys[i], ranked)
        found[i] = ranked
    return found  # type: ignore[return-value]


def rank(table: pd.DataFrame, records: Mapping[str, dict], alpha: float = RANK_ALPHA) -> pd.DataFrame:
    """Fill rank, p_vs_leader and rank_note for the rows given, protocol by protocol.

    Only the rows given are ranked against each other, so calling this on a filtered table ranks
    within the filter. Superseded rows are never ranked: an entry must not tie with itself.
    `records` are the board's: from the index, a protocol whose members did not change is not ranked again.
    """
    table = table.copy()
    n = len(table)
    ranks: list = [pd.NA] * n
    pvalues = [math.nan] * n
    notes = [""] * n
    if n:
        latest = table["latest"].to_numpy(dtype=bool)
        pairing, version, n_units, created = (table[c].tolist() for c in ("pairing", "version", "n_units", "created"))
        entry, path, mean, superseded = (table[c].tolist() for c in ("entry", "path", "mean", "superseded_by"))
        jobs = []
        for (setting, _), where in table.groupby(["setting", "protocol"], sort=False).indices.items():
            current = [int(i) for i in where if latest[i]]
            for i in where:
                if not latest[i]:
                    notes[i] = f"unranked: superseded by run {superseded[i]}"
            if not current:
                continue
            reference = _reference_pairing([(version[i], pairing[i], created[i]) for i in current])
            members = [i for i in current if pairing[i] == reference]
            for i in current:
                if pairing[i] != reference:
                    notes[i] = (
                        f"unranked: not paired-comparable with the ranked entries (protocol "
                        f"v{version[i]}, {n_units[i]} units, pairing "
                        f"{pairing[i][:40]}; ranked: {reference[:40]})"
                    )
            jobs.append(_Job(members, setting, [path[i] for i in members], [entry[i] for i in members],
                             [mean[i] for i in members]))  # fmt: skip
        for job, ranked in zip(jobs, _rankings(records, jobs, alpha)):
            for i, r in zip(job.members, ranked):
                ranks[i] = r.rank
                pvalues[i] = r.p_vs_leader
                if not math.isnan(r.p_vs_leader):
                    notes[i] = f"tied with {entry[job.members[r.leader]]} (p = {r.p_vs_leader:.3g})"
    table["rank"] = pd.array(ranks, dtype="Int64")
    table["p_vs_leader"] = np.asarray(pvalues, dtype=np.float64)
    table["rank_note"] = notes
    return table


def _reference_pairing(rows: list[tuple[int, str, pd.Timestamp]]) -> str:
    """The units a protocol's ranking is based on: newest version, then the most entries, then the newest;
    (version, pairing, created) per current row. A full tie goes to the first pairing in sorted order."""
    newest = max(v for v, _, _ in rows)
    entries: dict[str, int] = {}
    last: dict[str, pd.Timestamp] = {}
    for v, pairing, created in rows:
        if v == newest:
            entries[pairing] = entries.get(pairing, 0) + 1
            last[pairing] = max(last.get(pairing, created), created)
    return max(sorted(entries), key=lambda p: (entries[p], last[p]))
