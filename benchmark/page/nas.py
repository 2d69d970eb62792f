"""The page's architecture-search view: on a protocol where some record's backbone is a found cell, every record of
the same methods there, with its backbone's size, its search's cost and its accuracy beside the hand-designed
references (Conv-4, ResNet-12) and the random cell of the same space, and its paired difference with the same
method on Conv-4. Read from the records alone (they carry the genotype's size, the references' sizes and the
search cost), so the page imports no torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from .tables import md_escape, paired_difference, percent_ci

REFERENCES = ("conv4", "resnet12")


def heading(protocol: str) -> str:
    """Markdown above a protocol's architecture table."""
    return (
        f"**Architecture search on {md_escape(protocol)}**: found cells, the random cell of the same space and the "
        f"hand-designed backbones. Weights at the protocol's input (cells are widened to Conv-4's count); search "
        f"cost as the genotype file records it, on its own device; the difference is paired episode by episode "
        f"with the same method's latest Conv-4 record."
    )


def _architecture(record: Mapping[str, Any]) -> dict[str, Any] | None:
    arch = record.get("method", {}).get("architecture")
    return arch if isinstance(arch, dict) else None


def _kind(arch: dict[str, Any] | None, backbone: str) -> str:
    if arch is None:
        return "hand-designed" if backbone in REFERENCES else "other"
    strategy = arch.get("search", {}).get("strategy", "?")
    return "random cell (same space)" if strategy == "random" else f"found ({strategy})"


def _cost(arch: dict[str, Any] | None) -> str:
    if arch is None:
        return "—"
    s = arch.get("search", {})
    if s.get("strategy") == "random":
        return "none (one draw)"
    device = s.get("device", {})
    where = device.get("name") or device.get("type") or "?"
    eps = s.get("episodes", {})
    seen = sum(v for v in eps.values() if isinstance(v, (int, float))) if isinstance(eps, dict) else "?"
    minutes = s.get("wall_s", float("nan")) / 60
    return f"{minutes:.1f} min on {where} ({device.get('type', '?')}), {seen:,} episodes"


def architecture_tables(rows: pd.DataFrame, records: Mapping[str, dict]) -> dict[str, pd.DataFrame]:
    """protocol -> its architecture table, for every protocol in `rows` where a record's backbone is a found cell."""
    out: dict[str, pd.DataFrame] = {}
    candidates = rows[~rows["backbone"].isin(REFERENCES) & rows["backbone"].notna()]
    for protocol, found_rows in candidates.groupby("protocol", sort=True):
        archs = {p: a for p in found_rows["path"] if (a := _architecture(records[p])) is not None}
        if not archs:
            continue
        methods = set(found_rows.loc[found_rows["path"].isin(archs), "method"])
        shown = rows[(rows["protocol"] == protocol) & rows["method"].isin(methods)]
        refs: dict[str, int] = {}
        for a in archs.values():
            refs.update(a.get("reference_params") or {})
        table = []
        for row in shown.sort_values(["method", "mean"], ascending=[True, False]).to_dict("records"):
            arch = archs.get(row["path"])
            params = arch.get("params") if arch else refs.get(row["backbone"])
            table.append(
                {
                    "Method": row["method"],
                    "Backbone": row["backbone"],
                    "Kind": _kind(arch, row["backbone"]),
                    "Weights": f"{params:,}" if isinstance(params, int) else "—",
                    "Search cost": _cost(arch),
                    "Accuracy (%)": percent_ci(row["mean"], row["ci95"]),
                    "vs Conv-4, same method (points)": _versus_conv4(row, shown, records),
                    "Device": row["device"],
                }
            )
        for method in sorted(methods):  # a reference without a record still shows its size
            for ref in REFERENCES:
                if not ((shown["method"] == method) & (shown["backbone"] == ref)).any():
                    table.append(
                        {
                            "Method": method,
                            "Backbone": ref,
                            "Kind": "hand-designed",
                            "Weights": f"{refs[ref]:,}" if ref in refs else "—",
                            "Search cost": "—",
                            "Accuracy (%)": "no record yet",
                            "vs Conv-4, same method (points)": "—",
                            "Device": "—",
                        }
                    )
        out[str(protocol)] = pd.DataFrame(table)
    return out


def _versus_conv4(row: dict, shown: pd.DataFrame, records: Mapping[str, dict]) -> str:
    """The paired difference with the same method's latest Conv-4 record on the same episodes, and its test."""
    if row["backbone"] == "conv4":
        return "reference"
    ref = shown[(shown["method"] == row["method"]) & (shown["backbone"] == "conv4")]
    if ref.empty:
        return "no Conv-4 record"
    a, b = records[row["path"]], records[ref.sort_values("created").iloc[-1]["path"]]
    return paired_difference(a, b) or "not paired (other episodes)"
