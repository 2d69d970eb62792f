"""The continual tab: records of the three continual kinds (a stream, a task sequence, a meta-training sequence),
built with the setting's own record hooks, ranked by the board, shown with their own table columns, the stream's
curve with its CI band and the papers' points, and the accuracy matrix as heatmap cells; and the page renders it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from recordkit import write
from scipy import stats
from streamlit.testing.v1 import AppTest

from benchmark.core.errors import InvalidRecord
from benchmark.page import board as boards
from benchmark.page import continual, tables
from benchmark.protocols import PROTOCOLS
from benchmark.protocols.continual import SPLIT_ALPHABETS
from benchmark.records import validate
from benchmark.settings import SETTINGS, check_record
from benchmark.settings.base import Scored

APP = Path(__file__).resolve().parents[1] / "leaderboards" / "app.py"
STREAM, TIL, META = "omniglot-oml-stream", "split-omniglot-alphabets-til", "omniglot-meta-sequence-5w1s"
CHECKPOINTS = [10, 50, 100, 200, 600]
N_STREAMS = 10


# --- records, built with the setting's own hooks -------------------------------------------------------------


def _record(method: str, protocol: str, data, runs_scored: list[Scored], created: str) -> dict:
    """A record of `protocol` as the run loop assembles it: the part's protocol, run and summary sections."""
    part = SETTINGS.get("continual").for_protocol(protocol)
    runs = [
        {
            "seed": seed,
            **part.run_section(scored),
            "train_steps": 10,
            "train_time_s": 2.0,
            "eval_time_s": 1.0,
            "selection": {"rule": "final"},
            "checkpoint": None,
            **scored.extra,
        }
        for seed, scored in enumerate(runs_scored)
    ]
    record = {
        "schema_version": 2,
        "run_id": f"{method}-{protocol}",
        "created": created,
        "kind": "evaluation",
        "setting": "continual",
        "protocol": part.protocol_section(PROTOCOLS.get(protocol), data),
        "method": {"name": method, "backbone": "conv4", "hparams": {"lr": 0.001}, "recipe": None},
        "seeds": list(range(len(runs))),
        "runs": runs,
        "summary": {**part.summary_section(runs), "train_time_s": 2.0 * len(runs), "eval_time_s": 1.0 * len(runs)},
        "device": {"type": "cpu", "name": "test-cpu"},
        "environment": {"python": "3.11", "torch": "2.3.0"},
        "code": {"git_commit": "0" * 40, "git_dirty": False},
        "data": {"omniglot": "fp"},
    }
    validate(record)
    check_record(record)
    return record


def stream_record(method: str, test: np.ndarray, kept: np.ndarray, created="2026-01-01T00:00:00Z") -> dict:
    """`test` and `kept`: [seeds][streams][checkpoints] accuracies on held-out and learned images."""
    data = SimpleNamespace(
        orders=[None] * test.shape[1], classes_per_stream=CHECKPOINTS[-1], classes_limit=None,
        checkpoints=CHECKPOINTS, fingerprint="stream-fp",
    )  # fmt: skip
    scored = [
        Scored(t[:, -1].copy(), 1.0, {"checkpoints": CHECKPOINTS, "test_accuracy": t.tolist(), "retention": k.tolist()})
        for t, k in zip(test, kept)
    ]
    return _record(method, STREAM, data, scored, created)


def matrix_record(method: str, protocol: str, matrices: np.ndarray, units: np.ndarray | None = None) -> dict:
    """`matrices`: one T x T accuracy matrix per seed; `units` the meta-sequence's episodes ([seeds][T * per])."""
    t = matrices.shape[1]
    b = [0.05] * t
    if protocol == META:
        data = SimpleNamespace(task_names=[f"group{i}" for i in range(t)], fingerprint="meta-fp", episodes_per_task=4)
    else:
        data = SimpleNamespace(task_names=list(SPLIT_ALPHABETS), fingerprint="til-fp", task_classes=[33] * t)
    finals = [m[-1] for m in matrices] if units is None else list(units)
    scored = [Scored(np.asarray(u), 1.0, {"R": m.tolist(), "b": b}) for m, u in zip(matrices, finals)]
    return _record(method, protocol, data, scored, "2026-01-01T00:00:00Z")


def _stream_accuracies(rng, level: float, drift: float, seeds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Accuracies falling as classes are added, on streams that differ in difficulty alike for every method."""
    difficulty = np.random.default_rng(7).normal(0, 0.03, size=(N_STREAMS, 1))
    fall = np.linspace(0, drift, len(CHECKPOINTS))
    test = np.clip(level - fall + difficulty + rng.normal(0, 0.005, size=(seeds, N_STREAMS, 5)), 0, 1)
    return test, np.clip(test + 0.1, 0, 1)


def _matrices(rng, diagonal: float, forgetting: float, t: int, seeds: int = 2) -> np.ndarray:
    """Accuracy matrices whose earlier tasks lose `forgetting` per later task learned; about chance (b = 0.05)
    above the diagonal."""
    out = np.clip(0.05 + rng.normal(0, 0.01, size=(seeds, t, t)), 0, 1)
    for s in range(seeds):
        for i in range(t):
            for j in range(i + 1):
                out[s, i, j] = np.clip(diagonal - forgetting * (i - j) + rng.normal(0, 0.01), 0, 1)
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """oml and anml tied on the stream (the same streams, anml a hair better on some and worse on others),
    seq-finetune far below; er above seq-finetune on the task sequence; one meta-sequence record."""
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    oml_test, oml_kept = _stream_accuracies(rng, 0.9, 0.3)
    wiggle = np.tile([0.004, -0.004], N_STREAMS // 2)[None, :, None] * np.arange(1, 6)[None, None, :] / 5
    made = {
        "oml": stream_record("oml", oml_test, oml_kept),
        "anml": stream_record("anml", np.clip(oml_test + wiggle, 0, 1), oml_kept),
        "seq-finetune": stream_record("seq-finetune", *_stream_accuracies(rng, 0.5, 0.4)),
        "er-til": matrix_record("er", TIL, _matrices(rng, 0.9, 0.002, 20)),
        "seq-til": matrix_record("seq-finetune", TIL, _matrices(rng, 0.9, 0.03, 20)),
    }
    meta = _matrices(rng, 0.8, 0.05, 5, seeds=1)
    episodes = np.repeat(meta[0][-1], 4)[None, :] + np.tile([0.04, -0.04, 0.02, -0.02], 5)[None, :]
    made["protonet-meta"] = matrix_record("protonet", META, meta, episodes)
    for record in made.values():
        write(root, record)
    return root, made


def _rows(board: boards.Board, protocol: str) -> pd.DataFrame:
    return board.table[board.table["protocol"] == protocol]


def _ci(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


# --- the board and the table ---------------------------------------------------------------------------------


def test_the_board_ranks_continual_records_by_their_units_with_ties(results):
    root, _ = results
    board = boards.load(root)
    assert not board.warnings and set(board.table["setting"]) == {"continual"}
    stream = _rows(board, STREAM).set_index("method")
    assert stream.loc[["oml", "anml", "seq-finetune"], "rank"].tolist() == [1, 1, 2]
    assert "tied with" in stream.loc["anml", "rank_note"] or "tied with" in stream.loc["oml", "rank_note"]
    assert stream["n_units"].tolist() == [N_STREAMS] * 3  # streams are the units
    til = _rows(board, TIL).set_index("method")
    assert til.loc[["er", "seq-finetune"], "rank"].tolist() == [1, 2] and til["n_units"].tolist() == [20, 20]
    # the index gives the same table as the files, extras included
    pd.testing.assert_frame_equal(board.table, boards.load_files(root).table)


def test_the_stream_table_fills_curve_retention_classes_and_streams(results):
    root, made = results
    board = boards.load(root)
    page = SETTINGS.get("continual").for_protocol(STREAM).page
    shown = tables.display_table(_rows(board, STREAM), None, page.columns, page.unit_label).set_index("Method")
    assert {"Curve (%)", "Retention (%)", "Classes", "Streams"} <= set(shown.columns)
    assert shown["Classes"].tolist() == [600] * 3 and shown["Streams"].tolist() == [N_STREAMS] * 3
    runs = made["oml"]["runs"]
    test = np.mean([r["test_accuracy"] for r in runs], axis=0)  # streams x checkpoints, over seeds
    kept = np.mean([r["retention"] for r in runs], axis=0)
    want = " · ".join(f"{c}: {100 * m:.1f}" for c, m in zip(CHECKPOINTS, test.mean(axis=0)))
    assert shown.loc["oml", "Curve (%)"] == want
    assert shown.loc["oml", "Retention (%)"] == f"{100 * kept[:, -1].mean():.2f} ± {100 * _ci(kept[:, -1]):.2f}"
    assert shown.loc["oml", "Accuracy (%)"] == f"{100 * test[:, -1].mean():.2f} ± {100 * _ci(test[:, -1]):.2f}"


def test_the_matrix_tables_fill_acc_bwt_fwt_with_seed_intervals(results):
    root, made = results
    board = boards.load(root)
    page = SETTINGS.get("continual").for_protocol(TIL).page
    shown = tables.display_table(_rows(board, TIL), None, page.columns, page.unit_label).set_index("Method")
    assert list(shown.columns[:1]) == ["Rank"] and {"ACC (%)", "BWT (%)", "FWT (%)", "Tasks"} <= set(shown.columns)
    r = np.asarray([run["R"] for run in made["seq-til"]["runs"]])
    acc = r[:, -1].mean(axis=1)  # per seed
    bwt = np.array([np.mean([m[-1, j] - m[j, j] for j in range(19)]) for m in r])
    fwt = np.array([np.mean([m[j - 1, j] - 0.05 for j in range(1, 20)]) for m in r])
    assert shown.loc["seq-finetune", "ACC (%)"] == f"{100 * acc.mean():.2f} ± {100 * _ci(acc):.2f}"
    assert shown.loc["seq-finetune", "BWT (%)"] == f"{100 * bwt.mean():+.2f} ± {100 * _ci(bwt):.2f}"
    assert shown.loc["seq-finetune", "FWT (%)"] == f"{100 * fwt.mean():+.2f} ± {100 * _ci(fwt):.2f}"
    assert bwt.mean() < -0.2 and shown.loc["seq-finetune", "BWT (%)"].startswith("-")  # it forgets
    assert shown["Tasks"].tolist() == [20, 20]
    # one seed: no interval; the meta-sequence's tasks are its groups, not its 20 test episodes
    meta_page = SETTINGS.get("continual").for_protocol(META).page
    meta = tables.display_table(_rows(board, META), None, meta_page.columns, meta_page.unit_label)
    assert meta["Tasks"].tolist() == [5] and "±" not in meta["ACC (%)"].item()
    assert float(meta["ACC (%)"].item()) == pytest.approx(100 * made["protonet-meta"]["summary"]["mean"], abs=0.005)


def test_a_summary_that_disagrees_with_its_runs_is_refused_not_shown(results, tmp_path):
    """The record's checks tie acc and the curve to the runs, so an edited summary never reaches the page."""
    _, made = results
    edited = json.loads(json.dumps(made["er-til"]))
    edited["summary"]["acc"] = 0.99
    with pytest.raises(InvalidRecord, match="summary acc"):
        check_record(edited)
    write(tmp_path, edited)
    assert boards.load(tmp_path).table.empty


# --- the curve and the heatmap ---------------------------------------------------------------------------------


def test_the_curve_has_one_row_per_method_and_checkpoint_with_its_band(results):
    root, made = results
    rows = _rows(boards.load(root), STREAM)
    for metric, field in (("test", "test_accuracy"), ("retention", "retention")):
        curve = continual.stream_curve(rows, metric)
        assert len(curve) == 3 * len(CHECKPOINTS) and not curve.duplicated(["series", "classes"]).any()
        assert sorted(curve["classes"].unique()) == CHECKPOINTS
        assert (curve["low"] < curve["accuracy"]).all() and (curve["accuracy"] < curve["high"]).all()
        per_stream = np.mean([r[field] for r in made["anml"]["runs"]], axis=0)
        at_200 = curve[(curve["method"] == "anml") & (curve["classes"] == 200)].iloc[0]
        assert at_200["accuracy"] == pytest.approx(100 * per_stream[:, 3].mean())
        assert at_200["high"] - at_200["accuracy"] == pytest.approx(100 * _ci(per_stream[:, 3]))
    with pytest.raises(ValueError, match="metric"):
        continual.stream_curve(rows, "forgetting")
    chart = continual.curve_chart(curve, "test", continual.paper_anchors(STREAM, ["oml", "x"], _paper)).to_dict()
    assert [layer["mark"]["type"] for layer in chart["layer"]] == ["area", "line", "point"]


def _paper(method: str, protocol: str):
    return {10: 91.0, 600: 55.0} if method == "oml" and protocol == STREAM else None


def test_paper_anchors_are_the_looked_up_points():
    anchors = continual.paper_anchors(STREAM, ["x", "oml", "oml"], _paper)
    assert anchors[["label", "classes", "accuracy"]].values.tolist() == [["oml (paper)", 10, 91.0],
                                                                          ["oml (paper)", 600, 55.0]]  # fmt: skip
    assert continual.paper_anchors(TIL, ["oml"], _paper).empty and continual.paper_anchors(STREAM, ["oml"], None).empty


def test_the_heatmap_has_a_cell_per_pair_of_tasks(results):
    _, made = results
    for key, t in (("er-til", 20), ("protonet-meta", 5)):
        cells = continual.accuracy_matrix(made[key])
        assert len(cells) == t * t and not cells.duplicated(["after", "task"]).any()
        r = np.mean([run["R"] for run in made[key]["runs"]], axis=0)
        last = cells[cells["after"] == t].sort_values("task")["accuracy"].to_numpy()
        assert last == pytest.approx(100 * r[-1])
        above = cells.loc[(cells["after"] == 1) & (cells["task"] == 2), "accuracy"].item()  # before learning task 2
        assert above == pytest.approx(100 * r[0, 1]) and above < 10
    assert set(cells["task_name"]) == {f"group{i}" for i in range(5)}
    assert continual.matrix_chart(cells).to_dict()["mark"]["type"] == "rect"


# --- the page --------------------------------------------------------------------------------------------------


def _charts(tab) -> list[tuple[dict, list[pd.DataFrame]]]:
    """Each Altair chart in the tab: its Vega-Lite spec and its datasets (Arrow streams) as frames."""
    charts = [e for e in _walk(tab) if e.type == "vega_lite_chart"]
    return [
        (json.loads(c.proto.spec), [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in c.proto.datasets])
        for c in charts
    ]


def _walk(node):
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _walk(child)


def _continual(at: AppTest):
    return at.tabs[[t.label for t in at.tabs].index("continual")]


def test_the_app_renders_the_continual_tab(results, monkeypatch):
    root, _ = results
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(root))
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    assert not at.exception, at.exception
    tab = _continual(at)
    headings = [h.value for h in tab.subheader]
    assert f"{STREAM}: accuracy against classes seen" in [h.replace("\\", "") for h in headings]
    assert "Accuracy matrix" in headings
    frames = [d.value for d in tab.dataframe]
    stream = next(f for f in frames if "Curve (%)" in f.columns).set_index("Method")
    assert stream.loc["oml", "Paper (%)"] == "55.0" and stream.loc["oml", "Rank"] == 1
    assert stream["Classes"].tolist() == [600] * 3 and stream["Curve (%)"].str.startswith("10: ").all()
    til = next(f for f in frames if "ACC (%)" in f.columns and f["Tasks"].tolist() == [20, 20])
    assert til["Method"].tolist() == ["er", "seq-finetune"] and til["BWT (%)"].notna().all()

    charts = _charts(tab)
    curve_spec, (curve, anchors) = next(c for c in charts if "layer" in c[0] and len(c[1]) == 2)
    assert [layer["mark"]["type"] for layer in curve_spec["layer"]] == ["area", "line", "point"]
    assert len(curve) == 3 * len(CHECKPOINTS)
    # the papers' whole curves (OML's and ANML's re-runs of their official code), not only the 600-class point
    papers = anchors.set_index(["method", "classes"])["accuracy"]
    assert papers[("oml", 10)] == pytest.approx(91.0) and papers[("anml", 600)] == pytest.approx(64.0)
    assert len(anchors) == 10
    heat = next(frames for spec, frames in charts if spec.get("mark", {}).get("type") == "rect")
    assert len(heat[0]) == 5 * 5  # the first record in the selectbox: the meta-training sequence's

    at.radio(key=f"curve-{STREAM}").set_value("retention").run()
    assert not at.exception, at.exception
    curve_charts = [
        c for c in _charts(_continual(at)) if "layer" in c[0] and c[0]["layer"][0]["mark"]["type"] == "area"
    ]
    assert len(curve_charts[0][1]) == 1  # retention: no paper points (the papers report test accuracy)
    record = at.selectbox(key="matrix-record")
    record.select(next(o for o in record.options if o.startswith(TIL))).run()
    assert not at.exception, at.exception
    heat = next(frames for spec, frames in _charts(_continual(at)) if spec.get("mark", {}).get("type") == "rect")
    assert len(heat[0]) == 20 * 20
