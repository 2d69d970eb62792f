"""The page's first view of a setting (tables.overview) and the paper numbers beside our results."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from recordkit import fingerprint, make_record, paired_accuracies, write

from benchmark.methods.recipes import PaperResult
from benchmark.page import board as boards
from benchmark.page import tables

ONE, FIVE = "omniglot-5w1s", "omniglot-5w5s"
PAPERS = {("A", ONE): PaperResult(98.8, None, "Table 1"), ("C", FIVE): PaperResult(68.20, 0.66, "Table 2")}


def lookup(method, protocol):
    return PAPERS.get((method, protocol))


@pytest.fixture
def board(tmp_path):
    """omniglot-5w1s: A and B tied at rank 1 (B one query worse on one episode), C rank 2;
    omniglot-5w5s: A rank 1, C rank 2, no B. Averages: A 1.0 over 2, B 1.0 over 1, C 2.0 over 2."""
    a = paired_accuracies({"A": 0.8}, n=60, seed=1)["A"]
    b = list(a)
    b[0] -= 1 / 75
    c = paired_accuracies({"C": 0.55}, n=60, seed=2)["C"]
    for method, accs in (("A", a), ("B", b), ("C", c)):
        write(tmp_path, make_record(method, ONE, accs))
    five = paired_accuracies({"A": 0.9, "C": 0.6}, n=60, seed=3)
    for method, accs in five.items():
        write(tmp_path, make_record(method, FIVE, accs, shots=5))
    return boards.load(tmp_path)


def row(table, method, backbone="conv4"):
    return table[(table["Method"] == method) & (table["Backbone"] == backbone)].iloc[0]


def test_entries_are_rows_protocols_are_columns_best_average_first(board):
    t = tables.overview(board.table, lookup)
    assert list(t.columns) == tables.OVERVIEW_FIXED + [ONE, FIVE]
    assert t["Method"].tolist() == ["A", "B", "C"]  # A and B both average 1, A over more protocols
    assert t["Avg. rank"].tolist() == [1.0, 1.0, 2.0]
    assert t["Protocols ranked"].tolist() == [2, 1, 2]
    assert pd.isna(row(t, "B")[FIVE])  # B has no omniglot-5w5s result


def test_cells_are_mean_ci_with_the_paper_number_beside(board):
    t = tables.overview(board.table, lookup)
    rec = board.table.set_index(["protocol", "method"])
    a = rec.loc[(ONE, "A")]
    assert row(t, "A")[ONE] == f"{100 * a['mean']:.2f} ± {100 * a['ci95']:.2f} (paper 98.8)"
    assert row(t, "C")[FIVE].endswith(" (paper 68.20)")  # the mean only; the paper's CI is in the protocol table
    assert "paper" not in row(t, "B")[ONE]
    assert "paper" not in row(tables.overview(board.table), "A")[ONE]  # no lookup: no paper numbers


def test_caption_says_how_many_protocols_each_average_covers(board):
    caption = tables.overview_caption(tables.overview(board.table, lookup))
    assert "1 to 2 of the 2 protocols" in caption and "Meta-Dataset" in caption
    both = board.table[board.table["method"] != "B"]
    assert "Every average covers all 2 protocols" in tables.overview_caption(tables.overview(both))


def test_backbones_are_separate_entries_and_superseded_runs_are_left_out(tmp_path):
    accs = paired_accuracies({"A": 0.8, "old": 0.3, "R": 0.5}, n=40, seed=4)
    write(tmp_path, make_record("A", ONE, accs["A"], created="2025-02-01T00:00:00Z"))
    write(tmp_path, make_record("A", ONE, accs["old"], created="2024-01-01T00:00:00Z", run_id="old-a"))
    write(tmp_path, make_record("A", ONE, accs["R"], backbone="resnet12"))
    everything = boards.load(tmp_path, latest_only=False).table
    assert len(everything) == 3
    t = tables.overview(everything)
    assert [(m, b) for m, b in zip(t["Method"], t["Backbone"])] == [("A", "conv4"), ("A", "resnet12")]
    assert row(t, "A")[ONE].startswith(f"{100 * sum(accs['A']) / 40:.2f} ")  # the newest run, not old-a
    assert row(t, "A", "resnet12")["Avg. rank"] == 2.0


def test_unranked_rows_are_shown_but_not_averaged(tmp_path):
    accs = paired_accuracies({"A": 0.7, "X": 0.9}, n=30, seed=5)
    write(tmp_path, make_record("A", ONE, accs["A"]))
    write(tmp_path, make_record("X", ONE, accs["X"], episodes_fingerprint=fingerprint(ONE, salt="other")))
    t = tables.overview(boards.load(tmp_path).table)
    assert t["Method"].tolist() == ["A", "X"]  # X is ranked nowhere: last
    x = row(t, "X")
    assert math.isnan(x["Avg. rank"]) and x["Protocols ranked"] == 0 and " ± " in x[ONE]
    assert "Averages cover 0 to 1 of the 1 protocols" in tables.overview_caption(t)


def test_empty_rows_give_an_empty_overview(board):
    t = tables.overview(board.table.iloc[0:0], lookup)
    assert t.empty and list(t.columns) == tables.OVERVIEW_FIXED
    assert "Meta-Dataset" in tables.overview_caption(t)


def test_protocol_table_has_the_paper_column(board):
    shown = tables.display_table(board.table[board.table["protocol"] == FIVE], lookup)
    assert list(shown.columns)[:5] == ["Rank", "Method", "Backbone", "Accuracy (%)", "Paper (%)"]
    paper = dict(zip(shown["Method"], shown["Paper (%)"]))
    assert pd.isna(paper["A"]) and paper["C"] == "68.20 ± 0.66"
    assert tables.display_table(board.table)["Paper (%)"].isna().all()  # no lookup, no numbers


def test_paper_numbers_print_as_the_paper_prints_them():
    assert tables.paper_text(PaperResult(96.0)) == "96.0"
    assert tables.paper_text(PaperResult(49.42, 0.78)) == "49.42 ± 0.78"
    assert tables.paper_text(PaperResult(58.9, 1.9)) == "58.9 ± 1.9"
    assert tables.paper_text(PaperResult(58.9, 1.9), with_ci=False) == "58.9"
    assert tables.paper_text(PaperResult(68.20, 0.66), with_ci=False) == "68.20"
    assert tables.paper_text(None) is None


def test_paper_inside_our_interval():
    assert tables.paper_in_ci(0.9861, 0.0021, 98.8) is True  # 98.61 ± 0.21 holds 98.8
    assert tables.paper_in_ci(0.9600, 0.0038, 98.8) is False
    assert tables.paper_in_ci(0.5, float("nan"), 50.0) is None
    assert tables.paper_in_ci(0.5, None, 50.0) is None


def test_bench_list_method_compares_the_paper_with_the_newest_record(tmp_path, capsys):
    from benchmark.cli.main import main

    near = [0.99] * 30 + [0.986] * 30  # 98.8 %, the paper's omniglot-5w1s number, within the CI
    far = [0.5, 0.6] * 30  # 55 % on omniglot-5w5s, far from the paper's 99.7
    write(tmp_path, make_record("protonet", ONE, [0.2] * 60, created="2024-01-01T00:00:00Z", run_id="old"))
    write(tmp_path, make_record("protonet", ONE, near, created="2025-01-01T00:00:00Z", run_id="new"))
    write(tmp_path, make_record("protonet", FIVE, far, shots=5, run_id="far"))
    assert main(["list", "--method", "protonet", "--results", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.split("paper vs here")[1].splitlines()[1:]}
    assert "run new" in lines[ONE] and "paper inside our 95% CI" in lines[ONE]
    assert "run far" in lines[FIVE] and "paper outside our 95% CI (ours -44.70 points)" in lines[FIVE]
    assert lines["mini-imagenet-5w1s"].endswith("here: no record")
