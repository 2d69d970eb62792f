"""Ranks with ties, paired comparisons and the loading of result records into a table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from recordkit import fingerprint, make_record, paired_accuracies, tampered, write, write_raw
from scipy import stats

from benchmark.page import board as boards
from benchmark.page import tables
from benchmark.records import mean_ci
from benchmark.stats import ranking

PROTOCOL = "omniglot-5w1s"
STEP = 1 / 75  # one query out of 5 ways x 15 queries


def three_methods(n: int = 80):
    """A clearly best, B within noise of A, C clearly worse: the answer is ranks 1, 1, 2."""
    a = np.asarray(paired_accuracies({"A": 0.70}, n=n, seed=1)["A"])
    b = a.copy()
    b[:9] -= STEP  # nine episodes one query worse, seven one better: a hair lower on average
    b[9:16] += STEP
    c = np.clip(a - 0.12 + np.random.default_rng(2).normal(0, 0.02, n), 0, 1)
    c = np.round(c * 75) / 75
    return a.tolist(), b.tolist(), c.tolist()


def test_known_ties_and_ranks():
    a, b, c = three_methods()
    # The premise, checked with scipy directly so the expected answer is not taken on trust.
    assert stats.wilcoxon(a, b).pvalue > 0.5
    assert stats.wilcoxon(a, c).pvalue < 1e-6
    records = [make_record(m, PROTOCOL, accs) for m, accs in (("C", c), ("B", b), ("A", a))]
    ranked = boards.rank_records(records)
    assert [r.rank for r in ranked] == [2, 1, 1]
    assert np.isnan(ranked[2].p_vs_leader)  # A leads rank 1
    assert ranked[1].p_vs_leader == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert ranked[1].leader == 2


def test_rank_repeats_on_the_remaining_methods():
    accs = paired_accuracies({"A": 0.80, "B": 0.60, "C": 0.40}, n=60, seed=3)
    d = list(accs["B"])
    d[0] -= STEP  # indistinguishable from B, so it shares B's rank 2, not rank 3
    records = [make_record(m, PROTOCOL, v) for m, v in {**accs, "D": d}.items()]
    assert [r.rank for r in boards.rank_records(records)] == [1, 2, 3, 2]


def test_rank_does_not_depend_on_file_order():
    accs = paired_accuracies({"A": 0.7, "B": 0.7}, n=40, seed=4)
    same = {"A": accs["A"], "B": accs["A"]}  # identical results: a tie on the mean as well
    recs = [make_record(m, PROTOCOL, v) for m, v in same.items()]
    forward = boards.rank_records(recs)
    backward = boards.rank_records(recs[::-1])
    assert [r.rank for r in forward] == [1, 1] == [r.rank for r in backward]
    assert forward[0].leader == 0 and backward[1].leader == 1  # "A" leads either way


def test_compare_matches_scipy_on_seed_averaged_episodes():
    rng = np.random.default_rng(5)
    a_seeds = [np.round(rng.uniform(0.5, 0.9, 50) * 75) / 75 for _ in range(3)]
    b_seeds = [np.round(rng.uniform(0.4, 0.9, 50) * 75) / 75 for _ in range(2)]
    ra = make_record("A", PROTOCOL, [s.tolist() for s in a_seeds])
    rb = make_record("B", PROTOCOL, [s.tolist() for s in b_seeds])
    x, y = np.mean(a_seeds, axis=0), np.mean(b_seeds, axis=0)
    test = boards.compare(ra, rb)
    assert test.n == 50
    assert test.mean_diff == pytest.approx(float(np.mean(x - y)))
    assert test.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(x, y).pvalue)
    assert test.t_pvalue == pytest.approx(stats.ttest_rel(x, y).pvalue)


@pytest.mark.parametrize(
    "change, why",
    [
        (dict(episodes_fingerprint=fingerprint(PROTOCOL, salt="other")), "different test episodes"),
        (dict(version=2), "different protocol versions"),
    ],
)
def test_compare_refuses_records_on_different_episodes(change, why):
    a = make_record("A", PROTOCOL, [0.5, 0.6, 0.7])
    b = make_record("B", PROTOCOL, [0.5, 0.6, 0.8], **change)
    with pytest.raises(boards.NotPairable, match=why):
        boards.compare(a, b)
    with pytest.raises(boards.NotPairable):
        boards.rank_records([a, b])


def test_load_ranks_per_protocol_and_formats(tmp_path):
    a, b, c = three_methods()
    for m, accs in (("A", a), ("B", b), ("C", c)):
        write(tmp_path, make_record(m, PROTOCOL, accs, seeds=[7]))
    write(tmp_path, make_record("A", "omniglot-5w5s", a[:10], shots=5))
    board = boards.load(tmp_path)
    assert board.warnings == []
    t = board.table.set_index(["protocol", "method"])
    assert t.loc[(PROTOCOL, "A"), "rank"] == 1
    assert t.loc[(PROTOCOL, "B"), "rank"] == 1
    assert t.loc[(PROTOCOL, "C"), "rank"] == 2
    assert t.loc[("omniglot-5w5s", "A"), "rank"] == 1  # alone in its protocol
    assert "tied with A" in t.loc[(PROTOCOL, "B"), "rank_note"]
    shown = tables.display_table(board.table[board.table["protocol"] == PROTOCOL])
    assert shown["Method"].tolist()[2] == "C"
    ci = mean_ci(a)
    assert shown.loc[shown["Method"] == "A", "Accuracy (%)"].item() == f"{100 * ci.mean:.2f} ± {100 * ci.ci95:.2f}"
    assert json.loads(tables.to_json(shown))[0]["Rank"] == 1
    assert tables.to_csv(shown).splitlines()[0].startswith("Rank,Method,Backbone,Accuracy (%)")


def test_records_on_other_episodes_are_shown_unranked(tmp_path):
    accs = paired_accuracies({"A": 0.7, "B": 0.6, "X": 0.9}, n=30)
    write(tmp_path, make_record("A", PROTOCOL, accs["A"]))
    write(tmp_path, make_record("B", PROTOCOL, accs["B"]))
    write(tmp_path, make_record("X", PROTOCOL, accs["X"], episodes_fingerprint=fingerprint(PROTOCOL, salt="x")))
    t = boards.load(tmp_path).table.set_index("method")
    assert t.loc["A", "rank"] == 1 and t.loc["B", "rank"] == 2
    assert t.loc["X", "rank"] is pd.NA
    assert "not paired-comparable" in t.loc["X", "rank_note"]


def test_bad_records_go_to_warnings_not_the_table(tmp_path):
    good = make_record("A", PROTOCOL, [0.6, 0.7, 0.8])
    write(tmp_path, good)
    planted = {
        "edited-mean": tampered(make_record("B", PROTOCOL, [0.6, 0.7, 0.8], run_id="edited-mean"), mean=0.99),
        "edited-ci": tampered(make_record("C", PROTOCOL, [0.6, 0.7, 0.8], run_id="edited-ci"), ci95=0.001),
        "fewer-episodes": tampered(make_record("D", PROTOCOL, [0.6, 0.7, 0.8], run_id="fewer-episodes"), n_episodes=2),
    }
    for record in planted.values():
        write_raw(tmp_path, record)
    missing = make_record("E", PROTOCOL, [0.5, 0.6], run_id="no-summary")
    del missing["summary"]
    write_raw(tmp_path, missing)
    (tmp_path / "few-shot" / PROTOCOL / "F").mkdir(parents=True)
    (tmp_path / "few-shot" / PROTOCOL / "F" / "broken.json").write_text("{not json")
    misfiled = tmp_path / "few-shot" / "elsewhere.json"
    misfiled.write_text(json.dumps(make_record("G", PROTOCOL, [0.5, 0.6])))

    board = boards.load(tmp_path)
    assert board.table["method"].tolist() == ["A"]
    reasons = {w.path: w.reason for w in board.warnings}
    assert set(reasons) == {
        f"few-shot/{PROTOCOL}/B/edited-mean.json",
        f"few-shot/{PROTOCOL}/C/edited-ci.json",
        f"few-shot/{PROTOCOL}/D/fewer-episodes.json",
        f"few-shot/{PROTOCOL}/E/no-summary.json",
        f"few-shot/{PROTOCOL}/F/broken.json",
        "few-shot/elsewhere.json",
    }
    assert "summary mean" in reasons[f"few-shot/{PROTOCOL}/B/edited-mean.json"]
    assert "ci95" in reasons[f"few-shot/{PROTOCOL}/C/edited-ci.json"]
    assert "n_episodes" in reasons[f"few-shot/{PROTOCOL}/D/fewer-episodes.json"]
    assert "summary" in reasons[f"few-shot/{PROTOCOL}/E/no-summary.json"]
    assert "JSON" in reasons[f"few-shot/{PROTOCOL}/F/broken.json"]
    assert "misfiled" in reasons["few-shot/elsewhere.json"]


def test_latest_record_per_entry_by_default(tmp_path):
    old = make_record("A", PROTOCOL, [0.5, 0.6, 0.7], created="2025-01-01T00:00:00Z", run_id="old")
    new = make_record("A", PROTOCOL, [0.6, 0.7, 0.8], created="2025-02-01T00:00:00Z", run_id="new")
    other_backbone = make_record("A", PROTOCOL, [0.7, 0.8, 0.9], backbone="resnet12", run_id="r12")
    for r in (old, new, other_backbone):
        write(tmp_path, r)
    latest = boards.load(tmp_path).table
    assert sorted(latest["run_id"]) == ["new", "r12"]
    everything = boards.load(tmp_path, latest_only=False).table.set_index("run_id")
    assert len(everything) == 3
    assert everything.loc["old", "rank"] is pd.NA
    assert "superseded by run new" in everything.loc["old", "rank_note"]
    assert everything.loc["new", "rank"] >= 1


def test_filters_and_rerank_within_filter(tmp_path):
    accs = paired_accuracies({"A": 0.8, "B": 0.6}, n=40)
    write(tmp_path, make_record("A", PROTOCOL, accs["A"], backbone="resnet12"))
    write(tmp_path, make_record("B", PROTOCOL, accs["B"], backbone="conv4"))
    write(
        tmp_path,
        make_record(
            "C",
            "pacs-5w1s",
            accs["B"],
            setting="cross-domain",
            datasets=["pacs-photo", "pacs-sketch"],
            backbone="resnet18",
        ),
    )
    board = boards.load(tmp_path)
    assert board.settings == ["few-shot", "cross-domain", "domain-generalisation", "continual", "noisy-labels"]
    conv4 = tables.filter_table(board.table, backbones=["conv4"])
    assert conv4["method"].tolist() == ["B"] and conv4["rank"].tolist() == [2]
    assert boards.rank(conv4, board.records)["rank"].tolist() == [1]
    assert tables.filter_table(board.table, datasets=["pacs-sketch"])["method"].tolist() == ["C"]
    assert tables.filter_options(board.table)["datasets"] == ["omniglot", "pacs-photo", "pacs-sketch"]


def test_single_episode_and_empty_dirs(tmp_path):
    assert boards.load(tmp_path / "missing").table.empty
    assert boards.load(tmp_path).settings == [
        "few-shot",
        "cross-domain",
        "domain-generalisation",
        "continual",
        "noisy-labels",
    ]
    write(tmp_path, make_record("A", PROTOCOL, [0.5]))
    board = boards.load(tmp_path)
    assert tables.display_table(board.table)["Accuracy (%)"].item() == "50.00 ± n/a"


def test_the_page_can_state_the_test():
    assert ranking.RANK_ALPHA == 0.05
    assert "Wilcoxon" in ranking.RANK_TEST and "0.05" in ranking.RANKING_RULE


def test_record_strings_cannot_format_the_page():
    assert tables.md_escape("a_b $x$ :tada: [l](u)") == r"a\_b \$x\$ \:tada\: \[l\]\(u\)"


def test_bench_compare_reports_the_paired_difference(tmp_path, capsys):
    from benchmark.cli import main

    accs = paired_accuracies({"A": 0.80, "B": 0.70, "C": 0.801}, n=200, seed=3)
    paths = {m: write(tmp_path, make_record(m, "omniglot-5w1s", accs[m])) for m in accs}
    assert main(["compare", str(paths["A"]), str(paths["B"])]) == 0
    out = capsys.readouterr().out
    diff = np.asarray(accs["A"]) - np.asarray(accs["B"])
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    assert f"{100 * diff.mean():+.2f} +/- {100 * half:.2f} points" in out
    assert f"Wilcoxon signed-rank p = {stats.wilcoxon(accs['A'], accs['B']).pvalue:.3g}" in out
    assert "A is significantly better than B" in out
    assert main(["compare", str(paths["A"]), str(paths["C"])]) == 0
    assert "no significant difference" in capsys.readouterr().out


def test_bench_compare_refuses_unpaired_records(tmp_path, capsys):
    from benchmark.cli import main

    a = write(tmp_path, make_record("A", "omniglot-5w1s", [0.8, 0.9, 0.7]))
    b = write(tmp_path, make_record("B", "omniglot-5w5s", [0.8, 0.9, 0.7], shots=5))
    assert main(["compare", str(a), str(b)]) == 2
    assert "different protocols" in capsys.readouterr().err
