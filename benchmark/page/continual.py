"""The continual tab's tables and plots, computed without Streamlit: a stream's accuracy against the classes seen
(one line per entry with its 95% CI band, the papers' numbers as reference points), the table columns of the
stream and of the accuracy-matrix protocols (ACC, BWT, FWT), and a record's accuracy matrix as heatmap cells.

The numbers come from the board's rows (`extras`, recomputed from the runs when the record was indexed: rows.py)
and, for a matrix, from the record itself; the ranks are the board's (the setting's units: streams, tasks or test
episodes, paired as every setting's are).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..records import format_ci

if TYPE_CHECKING:  # altair comes with the page's extra ("app"); the commands that read tables do without it
    import altair as alt

# (method, protocol) -> what the method's paper reported along a stream protocol: classes seen -> test accuracy
# in percent, or None. Passed in by the page, which may import the methods; this layer may not.
CurveLookup = Callable[[str, str], Mapping[int, float] | None]

METRICS = {
    "test": "test accuracy (held-out images of every class seen)",
    "retention": "retention (the images learned, of every class seen)",
}
CURVE_COLUMNS = ["series", "entry", "method", "protocol", "classes", "accuracy", "ci95", "low", "high", "run_id"]
ANCHOR_COLUMNS = ["method", "label", "classes", "accuracy"]
CELL_COLUMNS = ["after", "task", "after_name", "task_name", "accuracy"]
# The columns the continual parts' PageSpecs declare that the generic table (tables.display_table) lacks
COLUMNS = ("Curve (%)", "Retention (%)", "Classes", "ACC (%)", "BWT (%)", "FWT (%)", "Tasks")
COLUMN_HELP = {
    "Curve (%)": "test accuracy after each number of classes learned (classes: %), mean over streams and seeds",
    "Retention (%)": "accuracy on the images learned, after the last class ± 95% CI over streams",
    "Classes": "classes in each stream",
    "ACC (%)": "mean accuracy over the tasks after the last one (GEM's ACC) ± 95% CI over seeds (several seeds)",
    "BWT (%)": "backward transfer: how later tasks changed the earlier ones (negative: forgetting) ± CI over seeds",
    "FWT (%)": "forward transfer: accuracy on a task before learning it, above an untrained model's ± CI over seeds",
    "Tasks": "tasks (or groups of classes) learned in order",
}

CURVE_TEXT = (
    "Accuracy after each number of classes learned, averaged over the fixed streams and the record's seeds; band: "
    "95% CI over streams. Test accuracy is on each seen class's held-out images, retention on the images the "
    "learner saw. Reference points: the papers' test accuracy (re-runs of their official code, with larger "
    "networks than here: `bench list --method oml` and `--method anml` say what differs)."
)
MATRIX_TEXT = (
    "Cell (row i, column j): accuracy (%) on task j after learning tasks 1..i in order, averaged over the record's "
    "seeds. Below the diagonal: tasks learned earlier (forgetting fades a column downwards); above it: tasks not "
    "learned yet. ACC is the mean of the last row, BWT the mean of last row minus diagonal, FWT the mean of the "
    "cells just above the diagonal minus an untrained model's accuracy (GEM, Lopez-Paz & Ranzato 2017)."
)


def fields(extras: str | None) -> dict:
    """A row's `extras` (JSON text; empty for a record without them) as a dict."""
    return json.loads(extras) if isinstance(extras, str) and extras else {}


def _signed(value: float | None, ci95: float | None, signed: bool) -> str | None:
    """Percent with the CI over seeds where there is one (several seeds), else the value alone."""
    if value is None:
        return None
    if ci95 is None:
        return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"
    return format_ci(value, ci95, unicode=True, signed=signed)


def _curve_text(curve: dict) -> str:
    return " · ".join(f"{c}: {100 * m:.1f}" for c, m in zip(curve["checkpoints"], curve["test_mean"]))


def _cells(f: dict) -> dict[str, object]:
    out: dict[str, object] = dict.fromkeys(COLUMNS)
    if "curve" in f:
        c = f["curve"]
        out["Curve (%)"] = _curve_text(c)
        out["Retention (%)"] = format_ci(c["retention_mean"][-1], c["retention_ci95"][-1], unicode=True)
        out["Classes"] = f.get("classes")
    if "acc" in f:
        out["ACC (%)"] = _signed(f["acc"], f.get("acc_seed_ci95"), signed=False)
        out["BWT (%)"] = _signed(f["bwt"], f.get("bwt_seed_ci95"), signed=True)
        out["FWT (%)"] = _signed(f.get("fwt"), f.get("fwt_seed_ci95"), signed=True)
        out["Tasks"] = f.get("tasks")
    return out


def table_columns(extras: Iterable[str], wanted: Sequence[str]) -> dict[str, pd.Series]:
    """The `wanted` continual columns (of COLUMNS) for rows with these `extras`, in row order: the curve as
    "classes: test accuracy" per checkpoint, retention after the last class ± its CI over streams, ACC/BWT/FWT
    in percent ± their CI over seeds (several seeds only), and the counts of classes and tasks."""
    if not wanted:
        return {}  # most tables: not a row's extras read
    cells = [_cells(fields(e)) for e in extras]
    out = {}
    for name in wanted:
        values = [c[name] for c in cells]
        counts = name in ("Classes", "Tasks")
        out[name] = pd.Series(values, dtype="Int64" if counts else object)
    return out


def _current(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["latest"].astype(bool)] if "latest" in rows.columns else rows


def stream_protocols(rows: pd.DataFrame) -> list[str]:
    """The stream protocols among the rows (those whose records have a curve), sorted."""
    has = rows["extras"].map(lambda e: "curve" in fields(e))
    return sorted(rows.loc[has, "protocol"].unique().tolist())


def matrix_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of accuracy-matrix protocols (task and meta-training sequences)."""
    return rows[rows["extras"].map(lambda e: "acc" in fields(e))]


def stream_curve(rows: pd.DataFrame, metric: str = "test") -> pd.DataFrame:
    """One row per (entry, checkpoint) of the current stream records among `rows`: the accuracy (%) after that
    many classes (`metric` "test" or "retention") and its 95% CI over streams as low/high (the band; as wide as
    the line where there is no CI, one stream). `series` names the line: the entry, with the run where one entry
    has several current records (other protocol versions); superseded records are left out."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, not {metric!r}")
    current = _current(rows)
    out = []
    picked = current[["entry", "method", "protocol", "run_id", "extras"]].to_dict("records")
    repeated = {e for e, n in pd.Series([r["entry"] for r in picked]).value_counts().items() if n > 1}
    for r in picked:
        f = fields(r["extras"])
        if "curve" not in f:
            continue
        c = f["curve"]
        series = f"{r['entry']} ({r['run_id']})" if r["entry"] in repeated else r["entry"]
        for classes, mean, ci in zip(c["checkpoints"], c[f"{metric}_mean"], c[f"{metric}_ci95"]):
            half = 0.0 if ci is None else ci
            out.append(
                {
                    "series": series,
                    "entry": r["entry"],
                    "method": r["method"],
                    "protocol": r["protocol"],
                    "classes": int(classes),
                    "accuracy": 100 * mean,
                    "ci95": math.nan if ci is None else 100 * ci,
                    "low": 100 * (mean - half),
                    "high": 100 * (mean + half),
                    "run_id": r["run_id"],
                }
            )
    return pd.DataFrame(out, columns=CURVE_COLUMNS)


def paper_anchors(protocol: str, methods: Iterable[str], lookup: CurveLookup | None) -> pd.DataFrame:
    """The papers' test accuracy (%) along the stream, one row per (method, classes), for the `methods` whose
    paper reported numbers on `protocol` (`lookup`)."""
    out = []
    for method in sorted(set(methods)):
        curve = lookup(method, protocol) if lookup is not None else None
        for classes, accuracy in sorted((curve or {}).items()):
            out.append({"method": method, "label": f"{method} (paper)", "classes": int(classes), "accuracy": accuracy})
    return pd.DataFrame(out, columns=ANCHOR_COLUMNS)


def accuracy_matrix(record: dict) -> pd.DataFrame:
    """The record's accuracy matrix R (the mean over its seeds) as heatmap cells, T x T of them: `after` (the
    row: tasks learned, 1-based), `task` (the column: the task scored), their names and the accuracy in %."""
    r = np.mean([np.asarray(run["R"], dtype=np.float64) for run in record["runs"]], axis=0)
    names = record["protocol"]["tasks"]
    t = r.shape[0]
    return pd.DataFrame(
        [
            {"after": i + 1, "task": j + 1, "after_name": names[i], "task_name": names[j], "accuracy": 100 * r[i, j]}
            for i in range(t)
            for j in range(t)
        ],
        columns=CELL_COLUMNS,
    )


def curve_chart(curve: pd.DataFrame, metric: str, anchors: pd.DataFrame | None = None) -> alt.LayerChart:
    """`stream_curve` as lines over their CI bands against the classes seen (log axis), with the papers' points
    (`paper_anchors`) as black marks, one shape per method."""
    import altair as alt

    ticks = sorted({*curve["classes"], *([] if anchors is None else anchors["classes"])})
    x = alt.X("classes:Q", title="classes seen (log scale)", scale=alt.Scale(type="log"), axis=alt.Axis(values=ticks))
    y_scale = alt.Scale(domain=[0, 100])
    color = alt.Color("series:N", title="method · backbone")
    tooltip = [
        "series",
        "classes",
        alt.Tooltip("accuracy:Q", format=".2f"),
        alt.Tooltip("ci95:Q", format=".2f", title="± CI95"),
        "run_id",
    ]
    title = f"{metric} accuracy (%)"
    base = alt.Chart(curve)
    band = base.mark_area(opacity=0.2).encode(
        x=x, y=alt.Y("low:Q", title=title, scale=y_scale), y2="high:Q", color=color
    )
    line = base.mark_line(point=True).encode(
        x=x, y=alt.Y("accuracy:Q", title=title, scale=y_scale), color=color, tooltip=tooltip
    )
    layers = [band, line]
    if anchors is not None and not anchors.empty:
        points = alt.Chart(anchors).mark_point(filled=True, size=90, color="black")
        layers.append(
            points.encode(
                x=x,
                y=alt.Y("accuracy:Q", title=title, scale=y_scale),
                shape=alt.Shape("label:N", title="paper"),
                tooltip=["label", "classes", alt.Tooltip("accuracy:Q", format=".1f")],
            )
        )
    return alt.LayerChart(layer=layers)


def matrix_chart(cells: pd.DataFrame) -> alt.Chart:
    """`accuracy_matrix` as a heatmap of square cells: rows the tasks learned so far, columns the task scored."""
    import altair as alt

    tasks = int(cells["task"].max()) if len(cells) else 1
    side = max(16, min(48, 560 // tasks))  # pixels: 5 tasks or 20 fit a column of the page
    return (
        alt.Chart(cells, width=alt.Step(side), height=alt.Step(side))
        .mark_rect()
        .encode(
            x=alt.X("task:O", title="task scored", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("after:O", title="after learning tasks 1..i"),
            color=alt.Color("accuracy:Q", title="accuracy (%)", scale=alt.Scale(scheme="viridis", domain=[0, 100])),
            tooltip=["after", "after_name", "task", "task_name", alt.Tooltip("accuracy:Q", format=".1f")],
        )
    )
