"""One record as one row of the leaderboard table, and the checks a record must pass to get one.

The results index (index.py) stores these rows and the boards (board.py) build their tables from them;
both go through `record_row` and `frame`, so a table built from the index equals one built straight
from the JSON files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InvalidRecord
from ..records import Record, mean_ci, record_path
from ..settings import SETTINGS, check_record

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
    "extras",
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


def units(record: dict) -> np.ndarray:
    """The record's per-unit scores averaged over seeds: what its setting ranks by."""
    return SETTINGS.get(record["setting"]).units(record)


def path_order(rel: str) -> tuple[str, ...]:
    """Sort key of a relative record path: folder by folder, the order `sorted(Path.rglob(...))` gives."""
    return tuple(rel.split("/"))


def record_row(record: dict, path: str, vec: np.ndarray | None = None) -> dict:
    """The table row of a checked record (`path` relative to the results folder); `vec` is its units when
    already computed. `created` is kept as normalised ISO text: `frame` makes the column timestamps."""
    r = Record.from_dict(record)
    p = r.protocol.section  # the episodic settings' fields; absent for other settings
    setting = SETTINGS.get(r.setting)
    vec = setting.units(record) if vec is None else vec
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
        "created": _iso(record_created(record)),
        "pairing": "|".join(str(k) for k in setting.pairing_key(record)),
        "recipe": r.method.recipe,
        "selection": ", ".join(sorted({run.selection_rule for run in r.runs})),
        "path": path,
        "run_id": r.run_id,
        "extras": extras(record, setting),
    }


# Summary fields beyond the mean that a setting's table shows (continual: a stream's curve, GEM's ACC, BWT, FWT)
SHOWN_SUMMARY = ("curve", "acc", "bwt", "fwt", "acc_seed_ci95", "bwt_seed_ci95", "fwt_seed_ci95")


def extras(record: dict, setting) -> str:
    """The record's `SHOWN_SUMMARY` fields and its count of stream classes or tasks, as JSON text ("" for a
    setting that has none). They are recomputed from the runs with the setting's own summary: the record's
    checks tie the runs to their scores, not the summary's copies of these to the runs."""
    if not any(k in record["summary"] for k in SHOWN_SUMMARY):
        return ""
    fresh = setting.summary_section(record["runs"])
    out = {k: fresh[k] for k in SHOWN_SUMMARY if k in fresh}
    p = record["protocol"]
    if "classes_per_stream" in p:
        out["classes"] = p["classes_per_stream"]
    if "tasks" in p:
        out["tasks"] = len(p["tasks"])
    return json.dumps(out, sort_keys=True)


# What record writers produce (the run loop writes the first); Python parses it about 50 times faster than
# pandas, which guesses a format for every string it is given one at a time.
_PLAIN_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)?")


def record_created(record: dict) -> pd.Timestamp | None:
    """The record's `created` in UTC (a date without a zone counts as UTC); None when it is not a date."""
    text = record["created"]
    if isinstance(text, str) and _PLAIN_ISO.fullmatch(text):
        stamp = pd.Timestamp(datetime.fromisoformat(text.replace("Z", "+00:00")))
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    created = pd.to_datetime(text, utc=True, errors="coerce")
    return None if pd.isna(created) else created


def _iso(created: pd.Timestamp | None) -> str:
    if created is None:
        raise InvalidRecord("created is not a date-time (record_problem says so first)")
    return created.isoformat()


def record_problem(record: dict, path: Path | None = None, results_dir: Path | None = None) -> str | None:
    """What the schema cannot see but a ranked table relies on; None when all is well."""
    try:
        check_record(record)
    except InvalidRecord as e:
        return str(e)
    created = record_created(record)
    if created is None:
        return f"created {record['created']!r} is not an ISO date-time"
    if created > pd.Timestamp.now(tz="UTC") + FUTURE_TOLERANCE:
        # "latest" decides which record of an entry is shown: a future date must not win it
        return f"created {record['created']} is in the future; fix the date (or the clock of the machine that wrote it)"
    if path is not None and results_dir is not None:
        expected = record_path(Path(results_dir), record)
        if Path(path).resolve() != expected.resolve():
            return f"misfiled: its contents say it belongs at {expected.relative_to(results_dir).as_posix()}"
    return None


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (record_row's dicts) as the board's table, every record marked latest or superseded."""
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["created"] = pd.to_datetime(table["created"], utc=True, format="ISO8601")
    return mark_latest(table)


def mark_latest(table: pd.DataFrame) -> pd.DataFrame:
    """Mark the newest record of each entry latest and name it in the others' superseded_by."""
    table = table.copy()
    table["latest"] = True
    table["superseded_by"] = None
    if table.empty:
        return table.astype({"latest": bool})
    # run_id breaks ties between records written in the same second, so the choice is stable.
    order = table.sort_values(["created", "run_id"], ascending=False, kind="stable")
    groups = order.groupby(ENTRY_KEY, sort=False, dropna=False)
    newest = groups["run_id"].transform("first")
    latest = groups.cumcount() == 0
    table["latest"] = latest.reindex(table.index)
    table["superseded_by"] = newest.where(~latest).reindex(table.index).astype(object)
    table.loc[table["latest"], "superseded_by"] = None
    return table.astype({"latest": bool})
