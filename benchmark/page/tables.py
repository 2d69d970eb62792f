"""What the page shows, computed without Streamlit: filters, display tables, downloads and plot data."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..records import format_ci, mean_ci
from ..stats.paired import paired_test
from ..stats.ranking import RANK_ALPHA, average_ranks
from . import continual
from .board import pairing_problem, units

# (method, protocol) -> what the method's paper reported there (a benchmark.methods.PaperResult: `mean` and
# `ci95` in percent), or None. Passed in by the page, which may import the methods; this layer may not.
PaperLookup = Callable[[str, str], Any | None]


def filter_table(
    table: pd.DataFrame,
    ways: Iterable[int] = (),
    shots: Iterable[int] = (),
    backbones: Iterable[str] = (),
    datasets: Iterable[str] = (),
) -> pd.DataFrame:
    """Rows matching every non-empty filter; a record matches a dataset if it uses it at all."""
    keep = pd.Series(True, index=table.index)
    if ways := set(ways):
        keep &= table["ways"].isin(ways)
    if shots := set(shots):
        keep &= table["shots"].isin(shots)
    if backbones := set(backbones):
        keep &= table["backbone"].isin(backbones)
    if datasets := set(datasets):
        keep &= table["datasets"].map(lambda s: bool(datasets & set(split_datasets(s))))
    return table[keep]


def split_datasets(joined: str) -> list[str]:
    return [d for d in joined.split(", ") if d]


def filter_options(table: pd.DataFrame) -> dict[str, list]:
    return {
        "ways": sorted(table["ways"].unique().tolist()),
        "shots": sorted(table["shots"].unique().tolist()),
        "backbones": sorted(table["backbone"].unique().tolist()),
        "datasets": sorted({d for s in table["datasets"] for d in split_datasets(s)}),
    }


_MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~$:")


def md_escape(text: str) -> str:
    """Record strings as literal text in Streamlit markdown, where `_` italicises, `$` starts
    LaTeX and `:name:` is an emoji; record contents are data, not page markup."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in str(text))


def percent_ci(mean: float, ci95: float | None) -> str:
    return format_ci(mean, ci95, unicode=True)


def _decimals(x: float) -> int:
    return 1 if round(x, 1) == round(x, 2) else 2


def paper_text(paper: Any, with_ci: bool = True, unicode: bool = True) -> str | None:
    """A paper's number as it prints it, in percent: "49.42 ± 0.78", "98.8"; None for no paper number.
    `unicode` False writes +/- (the terminal)."""
    if paper is None:
        return None
    ci = paper.ci95
    d = max(_decimals(paper.mean), _decimals(ci) if ci is not None else 1)  # "68.20 ± 0.66": as printed
    pm = "±" if unicode else "+/-"
    return f"{paper.mean:.{d}f}" + (f" {pm} {ci:.{d}f}" if ci is not None and with_ci else "")


def paper_in_ci(mean: float, ci95: float | None, paper_mean: float) -> bool | None:
    """Whether a paper's accuracy (percent) lies inside this project's 95% CI (fractions); None without a CI."""
    if ci95 is None or (isinstance(ci95, float) and math.isnan(ci95)):
        return None
    return abs(paper_mean / 100 - mean) <= ci95


def _paper_of(lookup: PaperLookup | None, method: str, protocol: str) -> Any:
    return lookup(method, protocol) if lookup is not None else None


# How the Kind column names a record's kind; "external" records (benchmark.compat) come from predictions made by
# outside code, which no one can re-run, so the page says so wherever the kind is shown
KIND_LABELS = {"external": "external (not re-verifiable)"}
KIND_HELP = (
    "evaluation: a built-in method, run by `bench evaluate`; submission: a user's file, run by `bench submit`; "
    "both re-run with `bench verify`. external: predictions made by outside code (torchmeta or learn2learn "
    "scripts) on the fixed test episodes and scored here; not re-verifiable"
)


def paired_difference(a: dict, b: dict) -> str | None:
    """The paired difference a - b in points, as "d ± CI (Wilcoxon p = ..., significant or not)", unit by unit
    over the records' seed-averaged units; None when the two were not scored on the same units."""
    if pairing_problem(a, b):
        return None
    x, y = np.asarray(units(a), np.float64), np.asarray(units(b), np.float64)
    d, test = mean_ci(x - y), paired_test(x, y)
    verdict = "significant" if test.wilcoxon_pvalue < RANK_ALPHA else "not significant"
    return (
        f"{format_ci(d.mean, d.ci95, unicode=True, signed=True)} (Wilcoxon p = {test.wilcoxon_pvalue:.2g}, {verdict})"
    )


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def units_column(unit_label: str) -> str:
    """The table column counting a setting's units: "test episode" -> "Episodes", "test image" -> "Images"."""
    return unit_label.split()[-1].capitalize() + "s"


def display_table(
    rows: pd.DataFrame,
    paper_lookup: PaperLookup | None = None,
    columns: Sequence[str] | None = None,
    unit_label: str = "test episode",
) -> pd.DataFrame:
    """One protocol's rows as the page shows them: best rank first, percentages, plain labels; only
    `columns` (a setting's PageSpec) when given, in their order.

    "Accuracy (%)" is text ("mean ± CI") for reading; "Mean (%)" carries the same number as a
    number so that sorting the column sorts by accuracy rather than alphabetically. "Paper (%)" is
    what the method's paper reported on the protocol (`paper_lookup`), empty where it reported nothing.
    """
    rows = rows.sort_values(["rank", "mean"], ascending=[True, False], na_position="last")
    table = pd.DataFrame(
        {
            "Rank": rows["rank"].astype("Int64"),
            "Method": rows["method"],
            "Backbone": rows["backbone"],
            "Accuracy (%)": [percent_ci(m, c) for m, c in zip(rows["mean"], rows["ci95"])],
            "Paper (%)": [paper_text(_paper_of(paper_lookup, m, p)) for m, p in zip(rows["method"], rows["protocol"])],
            "Mean (%)": (100 * rows["mean"]).round(2),
            "CI95 (%)": (100 * rows["ci95"]).round(2),
            "Seed CI95 (%)": (100 * rows["seed_ci95"]).round(2),
            units_column(unit_label): rows["n_units"],
            "Seeds": rows["n_seeds"],
            "Train time (s)": rows["train_time_s"].round(1),
            "Eval time (s)": rows["eval_time_s"].round(1),
            "Selection": rows["selection"],
            "Device": rows["device"],
            "Date": rows["created"].dt.strftime("%Y-%m-%d %H:%M"),
            "Kind": rows["kind"].map(kind_label),
            "Note": rows["rank_note"],
            "Run": rows["run_id"],
        }
    ).reset_index(drop=True)
    if columns is None:
        return table
    # a setting's own columns (the continual ones), only where its PageSpec asks: most tables have none
    for name, values in continual.table_columns(rows["extras"], [c for c in columns if c in continual.COLUMNS]).items():
        table[name] = values
    return table[[c for c in columns if c in table.columns]]


def protocol_caption(first: pd.Series, unit_label: str) -> str:
    """One protocol's line under its heading, from the fields its setting records."""
    bits = []
    if not pd.isna(first["ways"]):
        bits.append(
            # int: a column that also holds a protocol without episodes (NaN) is float
            f"{int(first['ways'])}-way {int(first['shots'])}-shot, {int(first['queries'])} queries per class, "
            f"images {int(first['image_size'])} px"
        )
    bits.append(f"datasets: {md_escape(first['datasets'] or '—')}")
    if first["test_split"]:
        bits.append(f"test split: {md_escape(first['test_split'])}")
    bits.append(f"{unit_label}s: {first['n_units']}")
    return " · ".join(bits)


OVERVIEW_FIXED = ["Method", "Backbone", "Avg. rank", "Protocols ranked"]


def overview(rows: pd.DataFrame, paper_lookup: PaperLookup | None = None) -> pd.DataFrame:
    """A setting's rows as one table: an entry (method · backbone) per row, a protocol per column.

    Cells are "mean ± CI" in percent, followed by the paper's number where the method's paper reported
    one ("98.61 ± 0.21 (paper 98.8)"). "Avg. rank" is the mean of the entry's ranks with ties (the
    board's `rank`, per protocol) over the protocols it is ranked on, as the Meta-Dataset leaderboard
    averages per-dataset ranks; "Protocols ranked" says how many that is. Superseded rows are left out;
    where an entry has several current rows for a protocol (other versions), the ranked, newest-version
    one is shown. Best average rank first; entries ranked nowhere last.
    """
    current = rows[rows["latest"].astype(bool)] if "latest" in rows.columns else rows
    protocols = sorted(current["protocol"].unique())
    if current.empty:
        return pd.DataFrame(columns=OVERVIEW_FIXED)
    chosen = (
        current.assign(_unranked=current["rank"].isna())
        .sort_values(["_unranked", "version", "created"], ascending=[True, False, False])
        .drop_duplicates(["method", "backbone", "protocol"], keep="first")
    )
    cells: dict[tuple[str, str], dict[str, str]] = {}
    ranks: dict[tuple[str, str], dict[str, int]] = {}
    # not iterrows, which builds a Series per row: slow on thousands of rows
    for r in chosen[["method", "backbone", "protocol", "mean", "ci95", "rank"]].to_dict("records"):
        key = (r["method"], r["backbone"])
        paper = paper_text(_paper_of(paper_lookup, r["method"], r["protocol"]), with_ci=False)
        cells.setdefault(key, {})[r["protocol"]] = percent_ci(r["mean"], r["ci95"]) + (
            f" (paper {paper})" if paper else ""
        )
        ranks.setdefault(key, {})
        if not pd.isna(r["rank"]):
            ranks[key][r["protocol"]] = int(r["rank"])
    averages = average_ranks(ranks)
    out = pd.DataFrame(
        [
            {
                "Method": m,
                "Backbone": b,
                "Avg. rank": round(averages[(m, b)], 2) if (m, b) in averages else math.nan,
                "Protocols ranked": len(ranks[(m, b)]),
                **{p: cells[(m, b)].get(p) for p in protocols},
            }
            for (m, b) in cells
        ],
        columns=OVERVIEW_FIXED + protocols,
    )
    out = out.sort_values(
        ["Avg. rank", "Protocols ranked", "Method", "Backbone"], ascending=[True, False, True, True], na_position="last"
    )
    return out.reset_index(drop=True)


def overview_caption(table: pd.DataFrame) -> str:
    """What the overview's cells and average ranks mean, and how many protocols each average covers."""
    protocols = [c for c in table.columns if c not in OVERVIEW_FIXED]
    n = len(protocols)
    counts = sorted(set(table["Protocols ranked"].astype(int))) if len(table) else []
    text = (
        "Cells: mean accuracy ± 95% CI over test episodes (%), with the method's paper's number in brackets "
        "where it reported one (its set-up may differ: see `bench list --method`). Avg. rank: the mean of an "
        "entry's per-protocol ranks (ranks with ties, as in the tables below) over the protocols it is "
        "ranked on, as the Meta-Dataset leaderboard averages its per-dataset ranks. "
    )
    if not counts:
        return text
    if counts == [n]:
        return text + f"Every average covers all {n} protocol{'s' if n != 1 else ''}."
    span = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    return text + (
        f'Averages cover {span} of the {n} protocols ("Protocols ranked"); averages over different '
        f"protocols are not directly comparable."
    )


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)


def to_json(table: pd.DataFrame) -> str:
    # pandas writes NA/NaN as null, which is what a JSON reader expects for "no value".
    return json.dumps(json.loads(table.to_json(orient="records", date_format="iso")), indent=1)


def shots_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) against shots, one line per entry, with the CI as low/high."""
    return _with_bounds(rows[["entry", "protocol", "shots", "mean", "ci95", "n_units"]])


def compute_scatter(rows: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) against train + eval seconds, one point per record."""
    out = _with_bounds(
        rows[["entry", "protocol", "mean", "ci95", "train_time_s", "eval_time_s", "total_time_s", "device"]]
    )
    # Compute goes on a log axis, which cannot show zero; a hundredth of a second is "no time".
    out["total_time_s"] = out["total_time_s"].clip(lower=0.01)
    return out


def _with_bounds(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    ci = out["ci95"].fillna(0.0)
    out["accuracy"] = 100 * out["mean"]
    out["low"] = 100 * (out["mean"] - ci)
    out["high"] = 100 * (out["mean"] + ci)
    out["ci95"] = 100 * ci
    return out.drop(columns=["mean"])


def record_label(row: pd.Series) -> str:
    return f"{row['protocol']} · {row['entry']} · {row['run_id']}"


def provenance(record: dict) -> dict:
    """What a reader needs to judge or reproduce a result, from the record itself."""
    out = {
        "run_id": record["run_id"],
        "kind": record["kind"],
        "created": record["created"],
        "seeds": record["seeds"],
        "method": record["method"]["name"],
        "backbone": record["method"].get("backbone"),
        "hparams": record["method"]["hparams"],
        "setting": record["setting"],
        "recipe": record["method"].get("recipe"),
        "protocol": {
            k: record["protocol"][k]
            for k in (
                "name",
                "version",
                "ways",
                "shots",
                "queries",
                "image_size",
                "test_split",
                "test_episodes",
                "episodes_fingerprint",
            )
            if k in record["protocol"]
        },
        "git_commit": record["code"].get("git_commit"),
        "git_dirty": record["code"].get("git_dirty"),
        "data_fingerprints": record["data"],
        "environment": record["environment"],
        "device": record["device"],
        "per_seed": [
            {
                "seed": r["seed"],
                "mean": r["mean"],
                "train_steps": r["train_steps"],
                "train_time_s": r["train_time_s"],
                "eval_time_s": r["eval_time_s"],
                "selection": r.get("selection"),
                "checkpoint": r.get("checkpoint"),
            }
            for r in record["runs"]
        ],
    }
    for key in ("source", "external"):
        if key in record["method"]:
            out[key] = record["method"][key]
    if record.get("notes"):
        out["notes"] = record["notes"]
    return out


def unit_histogram(record: dict) -> pd.DataFrame:
    """Each unit's (test episode's) accuracy in percent, averaged over seeds, for the detail histogram."""
    return pd.DataFrame({"accuracy": 100 * units(record)})
