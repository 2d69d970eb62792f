"""Leaderboard tables from result records, ranked per protocol with the statistic of each record's setting.

`load(results_dir)` reads every record under a results folder into one pandas table (a row per
record) and a list of the records it had to leave out, each with the reason. `rank` then gives,
within each protocol, ranks with ties (stats.ranking) over the units the protocol's setting pairs.

The Streamlit page (leaderboards/app.py) only lays out what the functions here compute, so that
everything a reader of the leaderboard relies on can be unit-tested without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..core.errors import InvalidRecord
from ..records import Record, iter_records, mean_ci, record_path
from ..settings import SETTINGS, check_record
from ..stats.paired import PairedTest, paired_test
from ..stats.ranking import RANK_ALPHA, NotPairable, Ranked, rank_vectors

# A leaderboard entry: results for another backbone or protocol version are a different entry,
# not an update of this one.
ENTRY_KEY = ["setting", "protocol", "version", "method", "backbone"]

COLUMNS = [
    "setting",
    "protocol",
    "version",
    "method",
    "kind",
    "backbone",
    "entry",
    "ways",
    "shots",
    "queries",
    "image_size",
    "datasets",
    "family",
    "test_split",
    "mean",
    "ci95",
    "seed_ci95",
    "n_units",
    "n_seeds",
    "train_time_s",
    "eval_time_s",
    "total_time_s",
    "device",
    "created",
    "pairing",
    "recipe",
    "selection",
    "path",
    "run_id",
    "latest",
    "superseded_by",
    "rank",
    "p_vs_leader",
    "rank_note",
]


# Clocks differ a little between machines; a record dated further ahead than this is not believed.
FUTURE_TOLERANCE = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Board:
    table: pd.DataFrame
    warnings: list[Skipped] = field(default_factory=list)
    records: dict[str, dict] = field(default_factory=dict)  # keyed by the table's "path"

    @property
    def settings(self) -> list[str]:
        return settings_to_show()


def settings_to_show() -> list[str]:
    """Every registered setting gets a tab (saying when it is empty); a record cannot add one."""
    return [name for name, _ in sorted(SETTINGS.items(), key=lambda kv: (kv[1].order, kv[0]))]


def units(record: dict):
    """The record's per-unit scores averaged over seeds: what its setting ranks by."""
    return SETTINGS.get(record["setting"]).units(record)


def _row(record: dict, path: str) -> dict:
    r = Record.from_dict(record)
    p = r.protocol.section  # the episodic settings' fields; absent for other settings
    setting = SETTINGS.get(r.setting)
    vec = setting.units(record)
    ways = p.get("ways")
    return {
        "setting": r.setting,
        "protocol": r.protocol.name,
        "version": r.protocol.version,
        "method": r.method.name,
        "kind": r.kind,
        "backbone": r.method.backbone or "—",
        "entry": r.method.entry,
        "ways": ways,
        "shots": p.get("shots"),
        "queries": p.get("queries"),
        "image_size": p.get("image_size"),
        "datasets": ", ".join(r.protocol.datasets),
        "family": f"{' + '.join(r.protocol.datasets) or r.protocol.name}" + (f" · {ways}-way" if ways else ""),
        "test_split": p.get("test_split", ""),
        "mean": r.summary.mean,
        "ci95": mean_ci(vec).ci95,
        "seed_ci95": mean_ci([run.mean for run in r.runs]).ci95,
        "n_units": len(vec),
        "n_seeds": r.summary.n_seeds,
        "train_time_s": float(r.train_time_s),
        "eval_time_s": float(r.eval_time_s),
        "total_time_s": float(r.train_time_s) + float(r.eval_time_s),
        "device": r.device_label,
        "created": pd.to_datetime(r.created, utc=True),
        "pairing": "|".join(str(k) for k in setting.pairing_key(record)),
        "recipe": r.method.recipe,
        "selection": ", ".join(sorted({run.selection_rule for run in r.runs})),
        "path": path,
        "run_id": r.run_id,
    }


def record_problem(record: dict, path: Path | None = None, results_dir: Path | None = None) -> str | None:
    """What the schema cannot see but a ranked table relies on; None when all is well."""
    try:
        check_record(record)
    except InvalidRecord as e:
        return str(e)
    created = pd.to_datetime(record["created"], utc=True, errors="coerce")
    if pd.isna(created):
        return f"created {record['created']!r} is not an ISO date-time"
    if created > pd.Timestamp.now(tz="UTC") + FUTURE_TOLERANCE:
        # "latest" decides which record of an entry is shown: a future date must not win it
        return f"created {record['created']} is in the future; fix the date (or the clock of the machine that wrote it)"
    if path is not None and results_dir is not None:
        expected = record_path(Path(results_dir), record)
        if Path(path).resolve() != expected.resolve():
            return f"misfiled: its contents say it belongs at {expected.relative_to(results_dir).as_posix()}"
    return None


def load(results_dir: str | Path, latest_only: bool = True) -> Board:
    """Every record under results_dir as a ranked table; the ones left out go to warnings.

    With latest_only (the default) only the most recent record of each entry (protocol, version,
    method, backbone) is kept; otherwise older ones are listed too, unranked, as superseded.
    """
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
            rows.append(_row(record, rel))
            records[rel] = record
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = _mark_latest(table)
    if latest_only:
        table = table[table["latest"]].reset_index(drop=True)
    return Board(rank(table, records), skipped, records)


def _mark_latest(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["latest"] = True
    table["superseded_by"] = None
    if table.empty:
        return table.astype({"latest": bool})
    # run_id breaks ties between records written in the same second, so the choice is stable.
    order = table.sort_values(["created", "run_id"], ascending=False)
    for _, group in order.groupby(ENTRY_KEY, sort=False, dropna=False):
        newest = group.index[0]
        for i in group.index[1:]:
            table.at[i, "latest"] = False
            table.at[i, "superseded_by"] = table.at[newest, "run_id"]
    return table.astype({"latest": bool})


# ----------------------------------------------------------------------------- comparing records


def pairing_problem(a: dict, b: dict) -> str | None:
    """Why two records cannot be compared unit by unit; None when they can."""
    if a["setting"] != b["setting"]:
        return f"different settings ({a['setting']} vs {b['setting']})"
    return SETTINGS.get(a["setting"]).pairing_problem(a, b)


def compare(record_a: dict, record_b: dict) -> PairedTest:
    """Paired test of a against b (mean_diff is a - b) on their seed-averaged unit scores."""
    problem = pairing_problem(record_a, record_b)
    if problem:
        raise NotPairable(problem)
    return paired_test(units(record_a), units(record_b))


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


def rank(table: pd.DataFrame, records: dict[str, dict], alpha: float = RANK_ALPHA) -> pd.DataFrame:
    """Fill rank, p_vs_leader and rank_note for the rows given, protocol by protocol.

    Only the rows given are ranked against each other, so calling this on a filtered table ranks
    within the filter. Superseded rows are never ranked: an entry must not tie with itself.
    """
    table = table.copy()
    table["rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table["p_vs_leader"] = math.nan
    table["rank_note"] = ""
    if table.empty:
        return table
    for _, group in table.groupby(["setting", "protocol"], sort=False):
        current = group[group["latest"]]
        for i in group.index.difference(current.index):
            table.at[i, "rank_note"] = f"unranked: superseded by run {table.at[i, 'superseded_by']}"
        if current.empty:
            continue
        reference = _reference_pairing(current)
        members = [i for i in current.index if current.at[i, "pairing"] == reference]
        for i in current.index:
            if current.at[i, "pairing"] != reference:
                table.at[i, "rank_note"] = (
                    f"unranked: not paired-comparable with the ranked entries (protocol "
                    f"v{current.at[i, 'version']}, {current.at[i, 'n_units']} units, pairing "
                    f"{current.at[i, 'pairing'][:40]}; ranked: {reference[:40]})"
                )
        ranked = rank_vectors(
            [units(records[table.at[i, "path"]]) for i in members],
            [table.at[i, "mean"] for i in members],
            [table.at[i, "entry"] for i in members],
            alpha,
        )
        for i, r in zip(members, ranked):
            table.at[i, "rank"] = r.rank
            table.at[i, "p_vs_leader"] = r.p_vs_leader
            if not math.isnan(r.p_vs_leader):
                leader = table.at[members[r.leader], "entry"]
                table.at[i, "rank_note"] = f"tied with {leader} (p = {r.p_vs_leader:.3g})"
    return table


def _reference_pairing(rows: pd.DataFrame) -> str:
    """The units a protocol's ranking is based on: newest version, then the most entries, then the newest."""
    newest = rows[rows["version"] == rows["version"].max()]
    counts = newest.groupby("pairing").agg(entries=("path", "size"), last=("created", "max"))
    return str(counts.sort_values(["entries", "last"], ascending=False).index[0])
