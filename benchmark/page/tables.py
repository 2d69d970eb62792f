"""What the page shows, computed without Streamlit: filters, display tables, downloads and plot data."""
from __future__ import annotations

import json
from typing import Iterable

import pandas as pd

from ..records import format_ci
from .board import units


def filter_table(table: pd.DataFrame, ways: Iterable[int] = (), shots: Iterable[int] = (),
                 backbones: Iterable[str] = (), datasets: Iterable[str] = ()) -> pd.DataFrame:
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


DISPLAY_COLUMNS = ["Rank", "Method", "Backbone", "Accuracy (%)", "Mean (%)", "CI95 (%)", "Seed CI95 (%)",
                   "Episodes", "Seeds", "Train time (s)", "Eval time (s)", "Device", "Date", "Kind",
                   "Note", "Run"]


def display_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One protocol's rows as the page shows them: best rank first, percentages, plain labels.

    "Accuracy (%)" is text ("mean ± CI") for reading; "Mean (%)" carries the same number as a
    number so that sorting the column sorts by accuracy rather than alphabetically.
    """
    rows = rows.sort_values(["rank", "mean"], ascending=[True, False], na_position="last")
    return pd.DataFrame({
        "Rank": rows["rank"].astype("Int64"),
        "Method": rows["method"],
        "Backbone": rows["backbone"],
        "Accuracy (%)": [percent_ci(m, c) for m, c in zip(rows["mean"], rows["ci95"])],
        "Mean (%)": (100 * rows["mean"]).round(2),
        "CI95 (%)": (100 * rows["ci95"]).round(2),
        "Seed CI95 (%)": (100 * rows["seed_ci95"]).round(2),
        "Episodes": rows["n_units"],
        "Seeds": rows["n_seeds"],
        "Train time (s)": rows["train_time_s"].round(1),
        "Eval time (s)": rows["eval_time_s"].round(1),
        "Device": rows["device"],
        "Date": rows["created"].dt.strftime("%Y-%m-%d %H:%M"),
        "Kind": rows["kind"],
        "Note": rows["rank_note"],
        "Run": rows["run_id"],
    }).reset_index(drop=True)


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
    out = _with_bounds(rows[["entry", "protocol", "mean", "ci95", "train_time_s", "eval_time_s",
                             "total_time_s", "device"]])
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
        "protocol": {k: record["protocol"][k] for k in
                     ("name", "version", "ways", "shots", "queries", "image_size", "test_split",
                      "test_episodes", "episodes_fingerprint") if k in record["protocol"]},
        "git_commit": record["code"].get("git_commit"),
        "git_dirty": record["code"].get("git_dirty"),
        "data_fingerprints": record["data"],
        "environment": record["environment"],
        "device": record["device"],
        "per_seed": [{"seed": r["seed"], "mean": r["mean"], "train_steps": r["train_steps"],
                      "train_time_s": r["train_time_s"], "eval_time_s": r["eval_time_s"],
                      "selection": r.get("selection"), "checkpoint": r.get("checkpoint")} for r in record["runs"]],
    }
    if "source" in record["method"]:
        out["source"] = record["method"]["source"]
    if record.get("notes"):
        out["notes"] = record["notes"]
    return out


def unit_histogram(record: dict) -> pd.DataFrame:
    """Each unit's (test episode's) accuracy in percent, averaged over seeds, for the detail histogram."""
    return pd.DataFrame({"accuracy": 100 * units(record)})
