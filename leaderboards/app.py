"""The metabench leaderboard page (Streamlit).

Run with `streamlit run leaderboards/app.py -- --results DIR` or `bench leaderboard`. The results
folder comes from --results, else $BENCH_RESULTS_DIR, else ./results. The page only reads result
records (JSON); it never imports or runs submitted code. Everything it shows is computed in
benchmark.page, so this file is layout only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

try:
    import benchmark  # noqa: F401
except ModuleNotFoundError:
    # `streamlit run leaderboards/app.py` from a checkout puts only leaderboards/ on sys.path.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import altair as alt
import pandas as pd
import streamlit as st

from benchmark.methods import ALGORITHMS, paper_result
from benchmark.page import board as boards
from benchmark.page import continual, nas, noisy, studies, sweeps, tables
from benchmark.page.domains import ORACLE_TEXT, SELECTION_TEXT, SHIFT_TEXT, domain_tables, shift_tables
from benchmark.page.index import ResultsIndex
from benchmark.protocols import PROTOCOLS
from benchmark.settings import SETTINGS
from benchmark.settings.domains import RANK_NOTE
from benchmark.stats.ranking import RANKING_RULE


def results_dir() -> Path:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--results", default=None)
    # parse_known_args: under streamlit's test harness argv belongs to pytest, not to us.
    args, _ = parser.parse_known_args(sys.argv[1:])
    return Path(args.results or os.environ.get("BENCH_RESULTS_DIR") or "results")


@st.cache_resource(show_spinner=False, max_entries=8)
def results_index(folder: str) -> ResultsIndex:
    """One index per results folder, shared by every session of this server."""
    return ResultsIndex(folder)


def load_board(folder: Path, latest_only: bool) -> boards.Board:
    """The board, from the results index: a stat walk of the folder finds what changed, and only new or
    changed records are read; an unchanged folder gives the board already built."""
    if not folder.is_dir():
        return boards.load(folder, latest_only)
    with st.spinner("Reading new or changed result records…", show_time=True):
        return boards.load(folder, latest_only, index=results_index(str(folder)))


def paper_lookup(method: str, protocol: str):
    """What a built-in method's paper reported on a protocol (its PAPER_RESULTS), else None."""
    # Imported on first use, not at the top: the methods import torch, which takes seconds on a cold start,
    # and by then the page's header, ranking rule and warnings are already on the reader's screen.
    import baselines  # noqa: F401  (registers the built-in methods)

    return paper_result(ALGORITHMS.get(method), protocol) if method in ALGORITHMS else None


def paper_curve(method: str, protocol: str) -> dict[int, float] | None:
    """What a built-in method's paper reported along a stream protocol, classes seen -> test accuracy (%): its
    PaperResult's curve, else that result alone at the stream's last checkpoint; None where it reported nothing."""
    paper = paper_lookup(method, protocol)
    if paper is None or protocol not in PROTOCOLS or PROTOCOLS.get(protocol).continual is None:
        return None
    return dict(paper.curve) if paper.curve else {PROTOCOLS.get(protocol).continual.checkpoints[-1]: paper.mean}


def sidebar(table: pd.DataFrame) -> dict:
    st.sidebar.header("Filters")
    opts = tables.filter_options(table)
    chosen = {
        "ways": st.sidebar.multiselect("Ways", opts["ways"], placeholder="all"),
        "shots": st.sidebar.multiselect("Shots", opts["shots"], placeholder="all"),
        "backbones": st.sidebar.multiselect("Backbone", opts["backbones"], placeholder="all"),
        "datasets": st.sidebar.multiselect("Dataset", opts["datasets"], placeholder="all"),
    }
    chosen["rerank"] = st.sidebar.checkbox(
        "Re-rank within the filtered rows",
        value=False,
        help="Off: ranks are over every entry of the protocol, filters only hide rows.",
    )
    return chosen


def show_warnings(board: boards.Board) -> None:
    if not board.warnings:
        return
    n = len(board.warnings)
    st.warning(
        f"{n} record{'s' if n != 1 else ''} left out: malformed, failing the schema, or "
        f"inconsistent with their own accuracies. See the list below."
    )
    with st.expander(f"Records left out ({n})", expanded=False):
        st.table(pd.DataFrame([{"path": w.path, "reason": w.reason} for w in board.warnings]))


def protocol_section(setting: str, protocol: str, rows: pd.DataFrame) -> None:
    page = SETTINGS.get(setting).for_protocol(protocol).page  # a setting's protocols may differ in units
    versions = sorted(rows["version"].unique())
    st.subheader(f"{tables.md_escape(protocol)} (v{', v'.join(map(str, versions))})")
    st.caption(tables.protocol_caption(rows.iloc[0], page.unit_label))
    shown = tables.display_table(rows, paper_lookup, page.columns or None, page.unit_label)
    st.dataframe(
        shown,
        hide_index=True,
        placeholder="—",
        column_config={
            "Rank": st.column_config.NumberColumn(help="Ranks with ties; see the rule above", format="%d"),
            "Accuracy (%)": st.column_config.TextColumn(help="mean ± 95% CI half-width over test episodes"),
            "Paper (%)": st.column_config.TextColumn(
                help="what the method's paper reported on this protocol (± its 95% "
                "CI where it gave one); its set-up may differ, see "
                "`bench list --method`"
            ),
            "Mean (%)": st.column_config.NumberColumn(format="%.2f"),
            "CI95 (%)": st.column_config.NumberColumn(format="%.2f"),
            "Seed CI95 (%)": st.column_config.NumberColumn(
                format="%.2f", help="95% CI over training seeds; empty with one seed"
            ),
            "Train time (s)": st.column_config.NumberColumn(format="%.1f"),
            "Eval time (s)": st.column_config.NumberColumn(format="%.1f"),
            "Kind": st.column_config.TextColumn(help=tables.KIND_HELP),
            **{name: st.column_config.Column(help=text) for name, text in continual.COLUMN_HELP.items()},
            "Selection": st.column_config.TextColumn(
                help="which trained model was scored: final (the last) or best-val (the best on the protocol's "
                "validation episodes; see the record's runs[].selection)"
            ),
        },
    )
    name = f"{setting}_{protocol}"
    left, right, _ = st.columns([1, 1, 6])
    left.download_button(
        "Download CSV",
        lambda: tables.to_csv(shown),  # made when clicked: a page of many protocols renders without them
        file_name=f"{name}.csv",
        mime="text/csv",
        key=f"csv-{setting}-{protocol}",
        on_click="ignore",
    )
    right.download_button(
        "Download JSON",
        lambda: tables.to_json(shown),
        file_name=f"{name}.json",
        mime="application/json",
        key=f"json-{setting}-{protocol}",
        on_click="ignore",
    )


def overview_section(rows: pd.DataFrame) -> None:
    """The setting at a glance: entries by protocols, with the average rank the Meta-Dataset leaderboard uses."""
    n = rows["protocol"].nunique()
    st.subheader(f"Overview ({n} protocol{'s' if n != 1 else ''})")
    table = tables.overview(rows, paper_lookup)
    st.dataframe(
        table,
        hide_index=True,
        placeholder="—",
        column_config={
            "Avg. rank": st.column_config.NumberColumn(
                format="%.2f",
                help="mean of the entry's per-protocol ranks (with ties) over the protocols it is ranked on",
            ),
            "Protocols ranked": st.column_config.NumberColumn(
                format="%d", help="how many protocols the average covers"
            ),
        },
    )
    st.caption(tables.overview_caption(table))


def domain_section(rows: pd.DataFrame, board: boards.Board) -> None:
    """DomainBed's table: a column per held-out target domain and their average; the oracle apart."""

    def oracle_of(path: str) -> float | None:
        return board.records[path]["summary"].get("oracle_mean")

    for family, main, oracle in domain_tables(rows, oracle_of):
        st.subheader(f"{family}: accuracy on the held-out domain (%)")
        st.dataframe(main, hide_index=True, placeholder="—", key=f"dg-{family}")
        st.caption(
            f"{tables.md_escape(SELECTION_TEXT)} Cells: mean ± 95% CI over the target's images (rank with ties "
            f"among the entries on that target). Average: over the targets, its CI from theirs (independent test "
            f"sets). {tables.md_escape(RANK_NOTE)}"
        )
        st.markdown("**Oracle (test-domain validation), not ranked**")
        st.dataframe(oracle, hide_index=True, placeholder="—", key=f"dg-oracle-{family}")
        st.caption(tables.md_escape(ORACLE_TEXT))
    for family, table in shift_tables(rows, lambda path: board.records[path]["summary"]):
        st.subheader(f"{family}: few-shot accuracy in an unseen domain (%)")
        st.dataframe(table, hide_index=True, placeholder="—", key=f"dg-shift-{family}")
        st.caption(tables.md_escape(SHIFT_TEXT))


def continual_section(rows: pd.DataFrame, board: boards.Board, wanted: set[str]) -> None:
    """A stream's accuracy against the classes seen, and the accuracy matrix of a task or meta-training sequence."""
    if "stream-curves" in wanted:
        for protocol in continual.stream_protocols(rows):
            stream_plot(protocol, rows[rows["protocol"] == protocol])
    matrices = continual.matrix_rows(rows)
    if "accuracy-matrix" in wanted and not matrices.empty:
        matrix_plot(matrices, board)


def stream_plot(protocol: str, rows: pd.DataFrame) -> None:
    st.subheader(f"{tables.md_escape(protocol)}: accuracy against classes seen")
    metric = st.radio(
        "Score", list(continual.METRICS), format_func=continual.METRICS.get, horizontal=True, key=f"curve-{protocol}"
    )
    curve = continual.stream_curve(rows, metric)
    anchors = continual.paper_anchors(protocol, ALGORITHMS, paper_curve) if metric == "test" else None
    chart = continual.curve_chart(curve, metric, anchors)
    st.altair_chart(chart, width="stretch", key=f"stream-{protocol}")
    st.caption(continual.CURVE_TEXT)


def matrix_plot(rows: pd.DataFrame, board: boards.Board) -> None:
    st.subheader("Accuracy matrix")
    ordered = rows.sort_values(["protocol", "rank", "mean"], ascending=[True, True, False], na_position="last")
    picked = ordered[["protocol", "entry", "run_id", "path"]].to_dict("records")
    labels = {tables.record_label(r): r["path"] for r in picked}
    label = st.selectbox("Record", list(labels), key="matrix-record")
    chart = continual.matrix_chart(continual.accuracy_matrix(board.records[labels[label]]))
    st.altair_chart(chart, width="content", key="matrix-heatmap")
    st.caption(f"{continual.MATRIX_TEXT} File: {tables.md_escape(labels[label])}")


def error_bar_chart(data: pd.DataFrame, x: alt.X, tooltip: list, line: bool) -> alt.LayerChart:
    """Mean accuracy per entry as points (joined by lines on the shots axis), 95% CI as a bar.

    On the shots axis entries are nudged apart within each band, or methods that tie (the
    interesting case) would hide one another.
    """
    base = alt.Chart(data)
    enc = {"x": x, "color": alt.Color("entry:N", title="method · backbone")}
    if line:
        enc["xOffset"] = alt.XOffset("entry:N")
    y_scale = alt.Scale(zero=False)
    bars = base.mark_rule(strokeWidth=2).encode(
        y=alt.Y("low:Q", title="accuracy (%)", scale=y_scale), y2="high:Q", **enc
    )
    points = base.mark_point(filled=True, size=60).encode(y=alt.Y("accuracy:Q", scale=y_scale), tooltip=tooltip, **enc)
    layers = [bars, points]
    if line:
        layers.insert(0, base.mark_line().encode(y=alt.Y("accuracy:Q", scale=y_scale), **enc))
    return alt.layer(*layers)


def plots(setting: str, rows: pd.DataFrame, wanted: tuple[str, ...]) -> None:
    if "shots" in wanted:
        shots_plot(setting, rows)
    if "compute" in wanted:
        compute_plot(setting, rows)


def shots_plot(setting: str, rows: pd.DataFrame) -> None:
    st.markdown("#### Accuracy vs shots")
    families = sorted(rows["family"].unique())
    family = st.selectbox("Datasets and ways", families, key=f"family-{setting}")
    curve = tables.shots_curve(rows[rows["family"] == family])
    tooltip = [
        "entry",
        "protocol",
        "shots",
        alt.Tooltip("accuracy:Q", format=".2f"),
        alt.Tooltip("ci95:Q", format=".2f", title="± CI95"),
        "n_units",
    ]
    x = alt.X("shots:O", title="shots", axis=alt.Axis(labelAngle=0))
    st.altair_chart(error_bar_chart(curve, x, tooltip, line=True), width="stretch", key=f"shots-{setting}")
    st.caption("Error bars: 95% CI over test episodes.")


def compute_plot(setting: str, rows: pd.DataFrame) -> None:
    st.markdown("#### Accuracy vs compute")
    protocols = sorted(rows["protocol"].unique())
    protocol = st.selectbox("Protocol", protocols, key=f"compute-protocol-{setting}")
    scatter = tables.compute_scatter(rows[rows["protocol"] == protocol])
    tooltip = [
        "entry",
        alt.Tooltip("accuracy:Q", format=".2f"),
        alt.Tooltip("ci95:Q", format=".2f", title="± CI95"),
        alt.Tooltip("train_time_s:Q", format=".1f"),
        alt.Tooltip("eval_time_s:Q", format=".1f"),
        "device",
    ]
    x = alt.X("total_time_s:Q", title="train + eval time (s, log scale)", scale=alt.Scale(type="log"))
    st.altair_chart(error_bar_chart(scatter, x, tooltip, line=False), width="stretch", key=f"compute-{setting}")
    st.caption("Times are as recorded, on each record's own device (see the table), so compare with care.")


def detail(setting: str, rows: pd.DataFrame, records: dict[str, dict], page) -> None:
    st.markdown("#### Method detail")
    ordered = rows.sort_values(["protocol", "rank", "mean"], ascending=[True, True, False], na_position="last")
    picked = ordered[["protocol", "entry", "run_id", "path"]].to_dict("records")  # not iterrows: thousands of rows
    labels = {tables.record_label(r): r["path"] for r in picked}
    label = st.selectbox("Record", list(labels), key=f"detail-{setting}")
    record = records[labels[label]]
    left, right = st.columns(2)
    if "unit-histogram" in page.plots:
        with left:
            unit = page.unit_label
            hist = tables.unit_histogram(record)
            chart = (
                alt.Chart(hist)
                .mark_bar()
                .encode(
                    x=alt.X("accuracy:Q", bin=alt.Bin(maxbins=25), title=f"{unit} accuracy (%), averaged over seeds"),
                    y=alt.Y("count():Q", title=f"{unit}s"),
                )
            )
            mean_rule = (
                alt.Chart(pd.DataFrame({"mean": [hist["accuracy"].mean()]}))
                .mark_rule(color="red", strokeDash=[4, 3])
                .encode(x="mean:Q")
            )
            st.altair_chart(chart + mean_rule, width="stretch", key=f"hist-{setting}")
            st.caption(f"{len(hist)} {unit}s; dashed line: mean. File: {tables.md_escape(labels[label])}")
    with right:
        st.json(tables.provenance(record), expanded=2)
        sweeps.render_part(st, record)  # a sweep's record: the configuration selected on validation


def setting_tab(setting: str, everything: pd.DataFrame, shown: pd.DataFrame, board: boards.Board) -> None:
    if not (everything["setting"] == setting).any():
        st.info(f"No results for {setting} yet.")
        return
    rows = shown[shown["setting"] == setting]
    if rows.empty:
        st.info(f"No {setting} results match the filters.")
        return
    page = SETTINGS.get(setting).page  # the setting says which of the page's sections it has
    overview_section(rows)
    st.divider()
    if "domain-table" in page.plots:
        domain_section(rows, board)
        st.divider()
    for protocol, protocol_rows in rows.groupby("protocol", sort=True):  # one pass, not a filter per protocol
        protocol_section(setting, str(protocol), protocol_rows)
    for protocol, table in nas.architecture_tables(rows, board.records).items():  # found cells and their references
        st.markdown(nas.heading(protocol))
        st.dataframe(table, hide_index=True)
    st.divider()
    # each protocol's own part (a stream, a task sequence) names the plots it has
    own = {p for name in rows["protocol"].unique() for p in SETTINGS.get(setting).for_protocol(str(name)).page.plots}
    if {"stream-curves", "accuracy-matrix"} & own:
        continual_section(rows, board, own)
        st.divider()
    noisy.weights_section(st, rows, board.records, page.plots)  # noisy labels: learned weights, pairs with erm
    plots(setting, rows, page.plots)
    st.divider()
    detail(setting, rows, board.records, page)


def main() -> None:
    st.set_page_config(page_title="metabench leaderboard", layout="wide")
    folder = results_dir()
    st.title("metabench leaderboard")
    latest_only = not st.sidebar.checkbox(
        "Show all records",
        value=False,
        help="Off: only the most recent record per method, backbone and protocol version.",
    )
    board = load_board(folder, latest_only)
    st.caption(
        f"Results folder: {tables.md_escape(folder.resolve())} · {len(board.table)} record(s) shown · "
        f"{len(board.warnings)} left out"
    )
    st.info(f"**How ranks are given.** {RANKING_RULE}")
    show_warnings(board)

    chosen = sidebar(board.table)
    shown = tables.filter_table(board.table, chosen["ways"], chosen["shots"], chosen["backbones"], chosen["datasets"])
    if chosen["rerank"]:
        shown = boards.rank(shown, board.records)

    names = [*board.settings, "Studies"]  # studies: ablations paired with a baseline, in folders of their own
    for name, tab in zip(names, st.tabs(names)):
        with tab:
            if name == "Studies":
                studies.render(st, os.environ.get("BENCH_STUDIES_DIR") or folder.resolve().parent / "studies")
            else:
                setting_tab(name, board.table, shown, board)


main()
