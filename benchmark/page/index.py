"""The results index: each record's table row, unit scores and verdict, kept in one SQLite file and
brought up to date incrementally.

A record is read, validated and checked once: when it first appears, or when its size, mtime, ctime or
inode changes and its sha256 with them (a touched file with the same bytes is only re-hashed). A
record rejected only for a future date is looked at again once that date has passed. Removed files
leave the index. The JSON records stay the source of truth: the index is a cache that can be deleted
or rebuilt at any time (`bench index --rebuild`), and one that is unreadable, or written by other
code (a version stamp hashes the modules that shape rows and ranks), is rebuilt with a log line.

SQLite (the standard library's sqlite3) because the index is a keyed table updated a few rows at a
time by concurrent page sessions and commands: one file, transactions, readers alongside a writer
(WAL), no new dependency. It lives beside the records as `<results>/.index.sqlite`; where that folder
cannot be written, in the temporary folder (keyed by the results path), else in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InvalidRecord
from ..records.io import parse_record, read_record_bytes
from ..stats.ranking import Ranked
from .rankstore import RankMemory, StoredPValues
from .rows import FUTURE_TOLERANCE, Skipped, path_order, record_created, record_problem, record_row, units
from .scan import code_version, json_files

INDEX_NAME = ".index.sqlite"
_BATCH = 500  # records per transaction while indexing: an interrupted build keeps what it did

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    path TEXT PRIMARY KEY,      -- relative to the results folder, with /
    size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER,
    sha256 TEXT,                -- of the file's bytes; NULL when they could not be read
    problem TEXT,               -- why the record is left out; NULL for a shown record
    recheck_at REAL,            -- when a verdict that depends on the clock must be made again
    row TEXT,                   -- the table row (JSON) of a shown record
    units BLOB                  -- its per-unit scores averaged over seeds, float64
);
CREATE TABLE IF NOT EXISTS ranks (key TEXT PRIMARY KEY, ranked TEXT NOT NULL, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pvalues (      -- the rank test of record a (leader) against record b
    a INTEGER, b INTEGER, p REAL, PRIMARY KEY (a, b)) WITHOUT ROWID;
"""

Signature = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


@dataclass
class SyncReport:
    """What one update of the index did."""

    files: int = 0  # record files in the folder (or asked about)
    read: int = 0  # files whose bytes were read (new or changed signature)
    checked: int = 0  # records parsed, validated and checked (new or changed content)
    removed: int = 0
    seconds: float = 0.0
    state: str = ""  # changes whenever what the index holds may have changed

    @property
    def changed(self) -> bool:
        return bool(self.checked or self.removed)


def damaged(e: sqlite3.Error) -> bool:
    """Whether an error says the index file is damaged (rebuild it), not busy or misused (do not)."""
    if isinstance(e, (sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.InterfaceError)):
        return False
    name = getattr(e, "sqlite_errorname", None)  # Python 3.11+
    if name is not None:
        return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_ERROR")
    return isinstance(e, sqlite3.DatabaseError) and not any(w in str(e) for w in ("locked", "busy"))


def fallback_location(root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"metabench-index-{os.getuid()}-{key}.sqlite"


class ResultsIndex(RankMemory):
    """The index of one results folder. Thread-safe: the page's sessions share one."""

    def __init__(self, root: str | os.PathLike, location: str | os.PathLike | None = None):
        self.root = Path(root)
        self._lock = threading.RLock()
        self.memo: dict = {}  # what callers derive from one state of the index (the board), keyed by it
        self._ranks: dict[str, list[Ranked]] = {}
        self.pvalues = StoredPValues(self)  # rank-test p-values by pair of records, for re-ranking
        self._sha: dict[str, str] = {}
        self._rows: dict[str, dict] | None = None  # the shown records' rows, kept from one sync to the next
        self._problems: dict[str, str] = {}
        self._known: dict[str, tuple] | None = None  # each indexed file's signature, sha256 and recheck time
        self._generation = 0  # counts the changes this process made
        self._their_version = None  # sqlite's count of the changes other processes made
        wanted = [Path(location)] if location else [self.root / INDEX_NAME, fallback_location(self.root)]
        if not self.root.is_dir():
            wanted = []  # nothing to index yet, and no folder to create behind the user's back
        for place in wanted:
            try:
                self.conn = self._connect(str(place))
                self.location = str(place)
                return
            except (sqlite3.Error, OSError) as e:
                log.info("results index: cannot use %s (%s); trying the next place", place, e)
        self.conn = self._connect(":memory:")
        self.location = ":memory:"

    # --- the file ---------------------------------------------------------------------------------------
    def _connect(self, location: str) -> sqlite3.Connection:
        existed = location != ":memory:" and Path(location).is_file() and Path(location).stat().st_size > 0
        try:
            conn = self._open(location)
            stamp = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            if stamp == (code_version(),):
                return conn
            why = "from other code" if stamp else "incomplete"
            conn.close()
        except sqlite3.DatabaseError as e:  # not a database, or a damaged one
            if not existed or not damaged(e):
                raise
            why = f"unreadable ({e})"
        if existed:
            log.warning("results index %s is %s: rebuilding it from the records", location, why)
        return self._create(location)

    @staticmethod
    def _open(location: str) -> sqlite3.Connection:
        conn = sqlite3.connect(location, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")  # readers are not blocked while a writer updates
        conn.execute("PRAGMA synchronous=NORMAL")  # a crash can lose the last update, never corrupt: it is a cache
        conn.executescript(_SCHEMA)
        return conn

    def _create(self, location: str) -> sqlite3.Connection:
        if location != ":memory:":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(location + suffix).unlink(missing_ok=True)
        conn = self._open(location)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (code_version(),))
        return conn

    def rebuild(self) -> SyncReport:
        """Forget everything and index every record again."""
        with self._lock:
            self.conn.close()
            self.conn = self._create(self.location)
            self._forget()
            return self.sync()

    def _forget(self) -> None:
        self.memo.clear()
        self._ranks.clear()
        self._sha.clear()
        self._rows = None
        self._known = None
        self._generation += 1

    def _guarded(self, action: Callable, resync: bool = True):
        """Run a reading or writing action; an index damaged under our feet is rebuilt, once."""
        with self._lock:
            try:
                return action()
            except sqlite3.DatabaseError as e:
                if not damaged(e):
                    raise
                log.warning("results index %s failed (%s): rebuilding it from the records", self.location, e)
                self.conn.close()
                self.conn = self._create(self.location)
                self._forget()
                if resync:
                    self._sync(None)
                return action()

    # --- bringing it up to date ---------------------------------------------------------------------------
    def sync(self, paths: Iterable[str] | None = None) -> SyncReport:
        """Bring the index up to date with the folder (or only with the files at the relative `paths`)."""
        return self._guarded(lambda: self._sync(paths), resync=False)

    def _walk(self, paths: Iterable[str] | None) -> tuple[dict[str, Signature | None], set[str]]:
        """The record files with their signatures (None: cannot be stat'ed, e.g. a dangling link), and the
        `paths` asked about that do not exist."""
        seen: dict[str, Signature | None] = {}
        missing = set()
        found = json_files(str(self.root)) if paths is None else ((rel, self.root / rel) for rel in paths)
        for rel, where in found:
            try:
                st = os.stat(where)
            except OSError:
                if paths is not None and not os.path.islink(where):
                    missing.add(rel)
                else:
                    seen[rel] = None
                continue
            seen[rel] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        return seen, missing

    def _sync(self, paths: Iterable[str] | None) -> SyncReport:
        start = time.perf_counter()
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._their_version:  # another process wrote the index: what we hold may be stale
            self._their_version = version
            self._forget()
        seen, missing = self._walk(paths)
        if self._known is None:
            sql = "SELECT path, size, mtime_ns, ctime_ns, inode, sha256, recheck_at FROM records"
            self._known = {r[0]: r[1:] for r in self.conn.execute(sql)}
        known = self._known
        now = time.time()
        gone = (set(known) - set(seen)) if paths is None else (missing & set(known))
        todo = [
            rel
            for rel, sig in seen.items()
            if rel not in known
            or sig is None
            or tuple(known[rel][:4]) != sig
            or (known[rel][5] is not None and known[rel][5] <= now)
        ]
        report = SyncReport(files=len(seen), removed=len(gone))
        replaced = any(rel in known for rel in todo)  # not only new files: some p-values may now be stale
        for i in range(0, len(todo), _BATCH):
            examined = [self._examine(rel, seen[rel], known.get(rel), now, report) for rel in todo[i : i + _BATCH]]
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(
                    "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [values for full, values in examined if full],
                )
                self.conn.executemany(
                    "UPDATE records SET size = ?, mtime_ns = ?, ctime_ns = ?, inode = ? WHERE path = ?",
                    [values for full, values in examined if not full],
                )
            self._hold([values for full, values in examined if full])
            for full, values in examined:  # what the next sync compares the folder with
                known[values[0] if full else values[4]] = (
                    (*values[1:6], values[7]) if full else (*values[:4], *known[values[4]][4:])
                )
        if gone:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany("DELETE FROM records WHERE path = ?", [(rel,) for rel in gone])
            self._hold([(rel, None) for rel in gone])
            for rel in gone:
                del known[rel]
        if report.changed:
            self._generation += 1
            self._prune_rankings(stale_pairs=bool(gone) or replaced)
        report.state = f"{self._their_version}:{self._generation}"
        report.seconds = time.perf_counter() - start
        return report

    def _examine(
        self, rel: str, sig: Signature | None, known: tuple | None, now: float, report: SyncReport
    ) -> tuple[bool, tuple]:
        """(True, the record's row of the records table), or (False, its new signature) when its bytes are
        those already indexed."""
        size, mtime, ctime, inode = sig or (None, None, None, None)
        path = self.root / rel
        report.read += 1
        try:
            data = read_record_bytes(path)
        except (InvalidRecord, OSError) as e:
            return True, (rel, size, mtime, ctime, inode, None, str(e), None, None, None)
        sha = hashlib.sha256(data).hexdigest()
        if known is not None and known[4] == sha and (known[5] is None or known[5] > now):
            return False, (size, mtime, ctime, inode, rel)
        report.checked += 1
        try:
            record = parse_record(data)
        except InvalidRecord as e:
            return True, (rel, size, mtime, ctime, inode, sha, str(e), None, None, None)
        problem = record_problem(record, path, self.root)
        if problem is not None:
            created = record_created(record)
            recheck = None
            if created is not None and created > pd.Timestamp.now(tz="UTC") + FUTURE_TOLERANCE:
                recheck = (created - FUTURE_TOLERANCE).timestamp()  # shown once its date is no longer ahead
            return True, (rel, size, mtime, ctime, inode, sha, problem, recheck, None, None)
        vec = np.asarray(units(record), dtype=np.float64)
        row = json.dumps(record_row(record, rel, vec))
        return True, (rel, size, mtime, ctime, inode, sha, None, None, row, vec.tobytes())

    def _hold(self, written: list[tuple]) -> None:
        """Bring the rows held in memory in line with records table rows just written (None: deleted)."""
        if self._rows is None:
            return
        for values in written:
            rel = values[0]
            self._rows.pop(rel, None)
            self._problems.pop(rel, None)
            self._sha.pop(rel, None)
            if len(values) < 10:
                continue
            if values[6] is None:
                self._rows[rel] = json.loads(values[8])
                self._sha[rel] = values[5]
            else:
                self._problems[rel] = values[6]

    # --- reading it -------------------------------------------------------------------------------------------
    def rows(self) -> tuple[list[dict], list[Skipped]]:
        """The shown records' rows and the left-out records' reasons, in file order."""

        def read():
            if self._rows is None:
                rows, problems = {}, {}
                for path, sha, problem, row in self.conn.execute("SELECT path, sha256, problem, row FROM records"):
                    if problem is None:
                        rows[path] = json.loads(row)
                        self._sha[path] = sha
                    else:
                        problems[path] = problem
                self._rows, self._problems = rows, problems
            shown = [self._rows[p] for p in sorted(self._rows, key=path_order)]
            return shown, [Skipped(p, self._problems[p]) for p in sorted(self._problems, key=path_order)]

        return self._guarded(read)

    def unit_vectors(self, paths: Sequence[str]) -> list[np.ndarray]:
        def read():
            found: dict[str, np.ndarray] = {}
            for i in range(0, len(paths), _BATCH):
                chunk = list(paths[i : i + _BATCH])
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT path, units FROM records WHERE problem IS NULL AND path IN ({marks})"
                for path, blob in self.conn.execute(sql, chunk):
                    found[path] = np.frombuffer(blob, dtype=np.float64)
            missing = [p for p in paths if p not in found]
            if missing:
                raise KeyError(f"not a shown record of the index: {missing[0]}")
            return [found[p] for p in paths]

        return self._guarded(read)

    def content_keys(self, paths: Sequence[str]) -> list[int]:
        """Each record file's sha256, as an integer of its first 60 bits: what its unit scores are a function
        of (short, as the p-values of every pair of records are kept under two of them)."""
        with self._lock:
            if any(p not in self._sha for p in paths):
                self.rows()
            return [int(self._sha[p][:15], 16) for p in paths]

    def problem(self, rel: str) -> str | None:
        """Why the record at `rel` is left out (None: it is shown); KeyError when the index has no such file."""
        row = self._guarded(lambda: self.conn.execute("SELECT problem FROM records WHERE path = ?", (rel,)).fetchone())
        if row is None:
            raise KeyError(rel)
        return row[0]

    def close(self) -> None:
        with self._lock:
            self.conn.close()
