"""The noisy-label setting's part of the page: how each method weighs training images whose label was corrupted
against those whose label is right (from the records' `label_weights`), and each method's paired difference
with ERM on the same test images. Tables and charts are computed here; `weights_section` lays them out on any
Streamlit-like `ui` (the app passes `st`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from .tables import md_escape, paired_difference, percent_ci

if TYPE_CHECKING:  # altair comes with the page's extra ("app")
    import altair as alt

PLOT = "label-weights"
BASELINE = "erm"
WEIGHTS_TEXT = (
    "Each training image's weight under the final model, in fixed batches of the training batch size with a clean "
    "meta batch each, relative to its batch's mean weight (1: an average share of the batch's loss; ERM weighs "
    "every image 1; L2RW's clipped, normalised weights; Meta-Weight-Net's V(loss)). Bars: the share of the images "
    "with a corrupted (or a clean) label in each weight bin, over the record's seeds. A method that spots the "
    "noise puts its corrupted labels' bars to the left of its clean ones. The corruption is the protocol's; no "
    "method ever sees which labels it moved."
)


def _bin_label(edges: list[float], i: int) -> str:
    return f"≥ {edges[i]:g}" if i == len(edges) - 1 else f"{edges[i]:g}–{edges[i + 1]:g}"


def _current(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["latest"].astype(bool)] if "latest" in rows.columns else rows


def weight_bins(rows: pd.DataFrame, records: Mapping[str, dict]) -> pd.DataFrame:
    """One row per (protocol, entry, label, bin): the share of the training images with that kind of label
    (corrupted or clean) whose weight falls in the bin, over the record's seeds."""
    out: list[dict[str, Any]] = []
    for row in _current(rows).to_dict("records"):
        runs = [r["label_weights"] for r in records[row["path"]]["runs"] if "label_weights" in r]
        if not runs:
            continue
        edges = runs[0]["edges"]
        for kind in ("corrupted", "clean"):
            counts = [sum(r[kind][i] for r in runs) for i in range(len(edges))]
            total = sum(counts)
            for i, c in enumerate(counts):
                out.append(
                    {
                        "protocol": row["protocol"],
                        "entry": row["entry"],
                        "label": kind,
                        "bin": _bin_label(edges, i),
                        "order": i,
                        "share": c / total if total else 0.0,
                        "images": c,
                    }
                )
    return pd.DataFrame(out, columns=["protocol", "entry", "label", "bin", "order", "share", "images"])


def weight_chart(bins: pd.DataFrame) -> alt.FacetChart:
    """Grouped bars of `weight_bins` for one protocol: a panel per entry, corrupted beside clean in every bin."""
    import altair as alt

    order = bins.sort_values("order")["bin"].drop_duplicates().tolist()
    return (
        alt.Chart(bins)
        .mark_bar()
        .encode(
            x=alt.X("bin:N", sort=order, title="weight relative to its batch's mean"),
            xOffset=alt.XOffset("label:N"),
            y=alt.Y("share:Q", title="share of the images with this label", axis=alt.Axis(format="%")),
            color=alt.Color("label:N", title="training label", scale=alt.Scale(domain=["corrupted", "clean"])),
            tooltip=["entry", "label", "bin", alt.Tooltip("share:Q", format=".1%"), "images"],
        )
        .properties(width=260, height=160)
        .facet(facet=alt.Facet("entry:N", title=None), columns=3)
    )


def _mean_weight(runs: list[dict], kind: str) -> float | None:
    """The mean weight of the training images with this kind of label, over the seeds that have any."""
    means = [r[f"mean_{kind}"] for r in runs if r.get(f"mean_{kind}") is not None]
    return sum(means) / len(means) if means else None


def weight_table(rows: pd.DataFrame, records: Mapping[str, dict]) -> pd.DataFrame:
    """Per protocol and entry: accuracy, the mean weights of corrupted and clean labels, the share of the total
    weight on corrupted labels, and the paired difference with ERM's latest record on the same test images."""
    current = _current(rows)
    table = []
    for row in current.sort_values(["protocol", "mean"], ascending=[True, False]).to_dict("records"):
        record = records[row["path"]]
        runs = [r["label_weights"] for r in record["runs"] if "label_weights" in r]
        base = current[(current["protocol"] == row["protocol"]) & (current["method"] == BASELINE)]
        if row["method"] == BASELINE:
            versus = "reference"
        elif base.empty:
            versus = f"no {BASELINE} record"
        else:
            other = records[base.sort_values("created").iloc[-1]["path"]]
            versus = paired_difference(record, other) or "not paired (other test images)"
        table.append(
            {
                "Protocol": row["protocol"],
                "Method": row["method"],
                "Backbone": row["backbone"],
                "Accuracy (%)": percent_ci(row["mean"], row["ci95"]),
                f"vs {BASELINE} (points)": versus,
                "Weight, corrupted": _mean_weight(runs, "corrupted"),
                "Weight, clean": _mean_weight(runs, "clean"),
                "Share on corrupted": record["summary"].get("weight_corrupted"),
                "Seeds": int(row["n_seeds"]),
            }
        )
    return pd.DataFrame(table)


def weights_section(ui: Any, rows: pd.DataFrame, records: Mapping[str, dict], plots: tuple[str, ...]) -> None:
    """The section on a Streamlit-like `ui`, when the setting's PageSpec names the plot."""
    if PLOT not in plots:
        return
    ui.markdown("#### Learned weight of corrupted and clean labels, and the paired difference with ERM")
    ui.dataframe(
        weight_table(rows, records),
        hide_index=True,
        column_config={
            k: ui.column_config.NumberColumn(format="%.3f")
            for k in ("Weight, corrupted", "Weight, clean", "Share on corrupted")
        },
    )
    bins = weight_bins(rows, records)
    if bins.empty:
        return
    protocols = sorted(bins["protocol"].unique())
    protocol = ui.selectbox("Protocol", protocols, key="label-weights-protocol")
    ui.altair_chart(weight_chart(bins[bins["protocol"] == protocol]), key="label-weights-chart")
    ui.caption(f"{WEIGHTS_TEXT} Protocol: {md_escape(protocol)}.")
