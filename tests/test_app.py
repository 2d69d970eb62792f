"""The leaderboard page, run in-process with Streamlit's AppTest (no browser, no server)."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest
from recordkit import DEMO_BAD, make_record, paired_accuracies, populate_demo, write
from streamlit.testing.v1 import AppTest

from benchmark.cli import serve
from benchmark.settings import SETTINGS

APP = Path(__file__).resolve().parents[1] / "leaderboards" / "app.py"


@pytest.fixture
def app(tmp_path, monkeypatch):
    populate_demo(tmp_path)
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def table_for(at: AppTest, protocol: str):
    """The dataframe laid out under the protocol's subheader (widgets carry no protocol name)."""
    heading = None

    def walk(node):
        nonlocal heading
        for child in getattr(node, "children", {}).values():
            if child.type == "subheader":
                heading = re.sub(r"\\(.)", r"\1", child.value)  # headings are markdown-escaped
            elif child.type == "dataframe" and heading and heading.startswith(protocol + " "):
                return child.value
            found = walk(child)
            if found is not None:
                return found
        return None

    table = walk(at.main)
    assert table is not None, f"no table for {protocol}"
    return table


def test_table_shows_methods_with_cis_and_ranks(app):
    table = table_for(app, "omniglot-5w1s")
    assert table["Method"].tolist() == ["A", "B", "C"]
    assert table["Rank"].tolist() == [1, 1, 2]
    assert all(" ± " in s for s in table["Accuracy (%)"])
    assert "Edited" not in table["Method"].tolist()
    assert {"Episodes", "Seeds", "Train time (s)", "Eval time (s)", "Selection", "Device", "Date"} <= set(table.columns)
    assert set(table["Selection"]) == {"final"}
    cross = table_for(app, "caltech101-to-pacs-sketch-5w1s")
    assert cross["Method"].tolist() == ["ProtoNet", "Baseline"]


def test_overview_comes_first_with_the_average_rank(app):
    few = app.tabs[0]
    overview = few.dataframe[0].value  # the first table of the tab
    assert list(overview.columns) == ["Method", "Backbone", "Avg. rank", "Protocols ranked", "omniglot-5w1s"]
    assert overview["Method"].tolist() == ["A", "B", "C"]
    assert overview["Avg. rank"].tolist() == [1.0, 1.0, 2.0] and overview["Protocols ranked"].tolist() == [1, 1, 1]
    assert all(" ± " in c for c in overview["omniglot-5w1s"])
    assert table_for(app, "Overview").equals(overview)
    assert any("Every average covers all 1 protocol" in c.value for c in few.caption)
    cross = app.tabs[1].dataframe[0].value
    assert cross["Method"].tolist() == ["ProtoNet", "Baseline"] and "Avg. rank" in cross.columns


def test_paper_numbers_beside_built_in_methods(tmp_path, monkeypatch):
    populate_demo(tmp_path)
    write(tmp_path, make_record("protonet", "omniglot-5w1s", paired_accuracies({"p": 0.97}, n=60, seed=1)["p"]))
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    overview = at.tabs[0].dataframe[0].value
    assert overview.loc[overview["Method"] == "protonet", "omniglot-5w1s"].item().endswith(" (paper 98.8)")
    assert "paper" not in overview.loc[overview["Method"] == "A", "omniglot-5w1s"].item()
    table = table_for(at, "omniglot-5w1s")
    assert table.loc[table["Method"] == "protonet", "Paper (%)"].item() == "98.8"  # Snell et al. 2017, Table 1
    assert pd.isna(table.loc[table["Method"] == "A", "Paper (%)"].item())


def test_tabs_and_empty_tab_message(app, tmp_path, monkeypatch):
    assert [t.label for t in app.tabs] == [
        "few-shot",
        "cross-domain",
        "domain-generalisation",
        "continual",
        "noisy-labels",
        "Studies",
    ]  # the registered settings, in order, then the studies
    only_few_shot = tmp_path / "only-few-shot"
    write(only_few_shot, make_record("A", "omniglot-5w1s", [0.5, 0.6, 0.7]))
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(only_few_shot))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert any("No results for cross-domain yet" in i.value for i in at.tabs[1].info)


def test_page_states_the_ranking_test(app):
    assert any("Wilcoxon" in i.value and "0.05" in i.value for i in app.info)


def test_warnings_panel_names_the_bad_record(app):
    assert any("1 record left out" in w.value for w in app.warning)
    assert [e.label for e in app.expander] == ["Records left out (1)"]
    left_out = app.table[0].value
    assert left_out["path"].tolist() == [DEMO_BAD]
    assert "summary mean" in left_out["reason"].item()


def test_downloads_plots_and_detail(app):
    labels = [b.label for b in app.get("download_button")]
    assert labels.count("Download CSV") == 2 and labels.count("Download JSON") == 2  # one per protocol
    assert len(app.get("vega_lite_chart")) >= 3 * 2  # shots, compute and histogram in each non-empty tab
    detail = app.selectbox(key="detail-few-shot")
    detail.select([o for o in detail.options if " A · " in o][0]).run()
    shown = app.json[0].value
    prov = json.loads(shown) if isinstance(shown, str) else shown
    assert prov["method"] == "A" and prov["seeds"] == [0]
    assert prov["git_commit"] and prov["protocol"]["episodes_fingerprint"]


def test_filters_hide_rows(app):
    app.sidebar.multiselect[2].select("resnet12").run()  # backbone
    assert not app.exception
    assert any("No few-shot results match the filters" in i.value for i in app.tabs[0].info)
    assert table_for(app, "caltech101-to-pacs-sketch-5w1s")["Method"].tolist() == ["ProtoNet", "Baseline"]


def test_empty_results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "nothing-here"))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert len(at.tabs) == len(SETTINGS) + 1 and not at.warning  # the settings and the studies
    assert sum("No results for" in i.value for i in at.info) == len(SETTINGS)
    assert any("No studies under" in i.value for i in at.tabs[-1].info)


def test_serve_builds_the_streamlit_command(tmp_path):
    port = serve.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # really free
    cmd = serve.build_command(tmp_path, port)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(cmd[4]) == APP and serve.app_path().is_file()
    assert cmd[cmd.index("--server.port") + 1] == str(port)
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[-3:] == ["--", "--results", str(tmp_path.resolve())]


def test_show_all_records_lists_superseded_runs(tmp_path, monkeypatch):
    populate_demo(tmp_path)
    old = make_record("A", "omniglot-5w1s", [0.5] * 60, created="2024-06-01T00:00:00Z", run_id="old-a")
    write(tmp_path, old)
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert "old-a" not in table_for(at, "omniglot-5w1s")["Run"].tolist()
    at.sidebar.checkbox[0].check().run()  # "Show all records"
    assert not at.exception
    table = table_for(at, "omniglot-5w1s")
    old_row = table[table["Run"] == "old-a"].iloc[0]
    assert old_row["Rank"] is pd.NA and "superseded" in old_row["Note"]
    assert table[table["Method"] != "Edited"]["Rank"].dropna().tolist() == [1, 1, 2]


def test_results_argument_wins_over_the_environment(tmp_path, monkeypatch):
    populate_demo(tmp_path / "chosen")
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "not-this-one"))
    monkeypatch.setattr(sys, "argv", ["app.py", "--results", str(tmp_path / "chosen")])
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert table_for(at, "omniglot-5w1s")["Method"].tolist() == ["A", "B", "C"]


def test_launch_runs_streamlit_and_returns_its_exit_code(tmp_path, monkeypatch):
    seen = {}

    class FakeProcess:
        def __init__(self, cmd, env, preexec_fn=None):
            seen["cmd"], seen["env"] = cmd, env

        def wait(self, timeout=None):
            return 3

    monkeypatch.setattr(serve.subprocess, "Popen", FakeProcess)
    assert serve.launch(tmp_path, port=8999) == 3
    assert seen["cmd"][seen["cmd"].index("--server.port") + 1] == "8999"
    assert str(APP.parents[1]) in seen["env"]["PYTHONPATH"].split(os.pathsep)
    serve.launch(tmp_path)  # no port given: a free one is picked
    assert int(seen["cmd"][seen["cmd"].index("--server.port") + 1]) > 0
