"""The results index: a board read from it equals one read from the JSON files, it re-reads only what changed,
survives damage and read-only folders, serves `bench index` and `bench compare`, and works for any setting
through the Setting hooks. Also the compiled validators and the batched ranking it relies on."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from recordkit import DEMO_BAD, make_record, paired_accuracies, populate_demo, tampered, write, write_raw
from scipy import stats

from benchmark.cli import main
from benchmark.page import board as boards
from benchmark.page import index as indexing
from benchmark.records import validators
from benchmark.settings import SETTINGS, Setting, register_setting
from benchmark.stats import ranking
from benchmark.stats.paired import paired_test

PROTOCOL = "omniglot-5w1s"


def mixed_folder(root: Path) -> None:
    """The demo board (ranks 1, 1, 2 and a tampered record), plus what a real folder collects: a superseded
    run, a record on other episodes, broken, misfiled, future-dated and unreadable files."""
    populate_demo(root)
    accs = paired_accuracies({"A": 0.8, "X": 0.7}, n=60, seed=1)
    write(root, make_record("A", PROTOCOL, [0.5] * 60, created="2024-06-01T00:00:00Z", run_id="old-a"))
    write(root, make_record("X", PROTOCOL, accs["X"], episodes_fingerprint="f" * 64))
    write(root, make_record("S", PROTOCOL, [accs["A"], accs["X"]], created="2025-03-01T10:00:00+02:00"))
    write_raw(root, tampered(make_record("T", PROTOCOL, accs["A"], run_id="edited-ci"), ci95=0.001))
    write_raw(root, make_record("F", PROTOCOL, accs["A"], created="2999-01-01T00:00:00Z", run_id="future"))
    (root / "few-shot" / "broken.json").write_text("{not json")
    (root / "few-shot" / "elsewhere.json").write_text(json.dumps(make_record("G", PROTOCOL, [0.5, 0.6])))
    (root / "few-shot" / "dangling.json").symlink_to(root / "nowhere.json")
    (root / "linked").symlink_to(root / "few-shot")  # not followed, as Path.rglob does not follow it


def assert_same_board(a: boards.Board, b: boards.Board) -> None:
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.warnings == b.warnings
    assert set(a.records) == set(b.records) >= set(a.table["path"])


@contextlib.contextmanager
def counting(monkeypatch, module, name):
    """Count the calls to module.name while the block runs."""
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a) or real(*a, **k))
    yield calls
    monkeypatch.setattr(module, name, real)


@pytest.mark.parametrize("latest_only", [True, False])
def test_board_from_the_index_equals_the_board_from_the_files(tmp_path, latest_only):
    mixed_folder(tmp_path)
    straight = boards.load_files(tmp_path, latest_only)
    built = boards.load(tmp_path, latest_only)
    assert (tmp_path / indexing.INDEX_NAME).is_file()
    assert_same_board(built, straight)
    assert_same_board(boards.load(tmp_path, latest_only), straight)  # a second load: the index as it stands
    t = built.table.set_index("run_id")
    assert t.loc[["A-omniglot-5w1s-2025-01-01", "B-omniglot-5w1s-2025-01-01"], "rank"].tolist() == [1, 1]
    assert "not paired-comparable" in t.loc["X-omniglot-5w1s-2025-01-01", "rank_note"]
    reasons = {w.path: w.reason for w in built.warnings}
    assert "summary mean" in reasons[DEMO_BAD] and "ci95" in reasons["few-shot/omniglot-5w1s/T/edited-ci.json"]
    assert "in the future" in reasons["few-shot/omniglot-5w1s/F/future.json"]
    assert "JSON" in reasons["few-shot/broken.json"] and "misfiled" in reasons["few-shot/elsewhere.json"]
    assert "cannot be read" in reasons["few-shot/dangling.json"]
    assert len(built.table) + len(built.warnings) == len(list(tmp_path.rglob("*.json"))) - latest_only
    record = built.records["few-shot/omniglot-5w1s/A/A-omniglot-5w1s-2025-01-01.json"]  # read on demand
    assert record["method"]["name"] == "A" and len(record["runs"][0]["episode_accuracies"]) == 60


def test_only_new_or_changed_records_are_read_and_only_their_protocols_reranked(tmp_path, monkeypatch):
    populate_demo(tmp_path)
    index = indexing.ResultsIndex(tmp_path)
    first = index.sync()
    assert first.read == first.checked == 6 and first.files == 6
    boards.load(tmp_path, index=index)
    with (
        counting(monkeypatch, indexing, "read_record_bytes") as reads,
        counting(monkeypatch, boards, "rank_many") as ranked,
    ):
        assert sorted(boards.load(tmp_path, index=index).table["method"]) == ["A", "B", "Baseline", "C", "ProtoNet"]
        assert reads == [] and ranked == []  # nothing changed: nothing read, nothing ranked

        added = write(tmp_path, make_record("D", PROTOCOL, paired_accuracies({"D": 0.3}, n=60, seed=9)["D"]))
        table = boards.load(tmp_path, index=index).table.set_index("method")
        assert [Path(p) for (p,) in reads] == [added] and table.loc["D", "rank"] == 3
        assert len(ranked) == 1 and len(ranked[0][0]) == 1  # one protocol re-ranked; the cross-domain one not

        reads.clear()
        rewritten = make_record("D", PROTOCOL, paired_accuracies({"D": 0.95}, n=60, seed=9)["D"])
        added.write_text(json.dumps(rewritten))
        table = boards.load(tmp_path, index=index).table.set_index("method")
        assert (
            len(reads) == 1 and table.loc["D", "rank"] == 1 and table.loc["D", "mean"] == rewritten["summary"]["mean"]
        )

        reads.clear()
        os.utime(added, ns=(1, 1))  # touched, same bytes: read and hashed, not checked again
        report = index.sync()
        assert len(reads) == 1 and report.read == 1 and report.checked == 0

        added.unlink()
        report = index.sync()
        assert report.removed == 1 and "D" not in boards.load(tmp_path, index=index).table["method"].tolist()


def test_a_future_record_is_looked_at_again_when_its_date_comes(tmp_path, monkeypatch):
    when = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=3)
    write(tmp_path, make_record("A", PROTOCOL, [0.5, 0.6], created=when.isoformat(), run_id="soon"))
    index = indexing.ResultsIndex(tmp_path)
    assert index.sync().checked == 1 and index.sync().read == 0
    later = when.timestamp() - indexing.FUTURE_TOLERANCE.total_seconds() + 1
    monkeypatch.setattr(indexing.time, "time", lambda: later)
    assert index.sync().checked == 1  # its verdict depended on the clock


def test_a_page_starting_from_a_built_index_tests_only_a_new_records_pairs(tmp_path, monkeypatch):
    accs = paired_accuracies({f"M{i}": 0.5 + 0.04 * i for i in range(8)}, n=60, seed=5)
    for method, a in accs.items():
        write(tmp_path, make_record(method, PROTOCOL, a))
    boards.load(tmp_path)  # the index, its rankings and its p-values are built
    worst = paired_accuracies({"W": 0.2}, n=60, seed=6)["W"]
    write(tmp_path, make_record("W", PROTOCOL, worst))
    tested = []
    real = ranking.pair_pvalues
    monkeypatch.setattr(ranking, "pair_pvalues", lambda pairs: tested.extend(pairs) or real(pairs))
    board = boards.load(tmp_path)  # a new index object, as a page process has
    assert len(tested) == 2 * 8 and all(any(np.array_equal(v, worst) for v in pair) for pair in tested)
    monkeypatch.setattr(ranking, "pair_pvalues", real)
    assert_same_board(board, boards.load_files(tmp_path))
    assert board.table.set_index("method").loc["W", "rank"] == board.table["rank"].max()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other code"])
def test_a_damaged_or_foreign_index_is_rebuilt(tmp_path, caplog, damage):
    populate_demo(tmp_path)
    expected = boards.load_files(tmp_path)
    boards.load(tmp_path)
    file = tmp_path / indexing.INDEX_NAME
    with sqlite3.connect(file) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if damage == "other code":
            conn.execute("UPDATE meta SET value = 'older' WHERE key = 'version'")
    if damage == "garbage":
        file.write_bytes(os.urandom(5000))
    elif damage == "truncated":
        file.write_bytes(file.read_bytes()[:200])
    with caplog.at_level(logging.WARNING, logger=indexing.__name__):
        assert_same_board(boards.load(tmp_path), expected)
    assert any("rebuilding" in r.message for r in caplog.records)


@contextlib.contextmanager
def read_only(folder: Path):
    """The folder made unwritable, for root as well (root ignores permission bits: the immutable flag)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(OSError):
            (folder / "probe").touch()
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_results_folder_is_indexed_elsewhere(tmp_path, monkeypatch):
    results = tmp_path / "results"
    populate_demo(results)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with read_only(results):
        board = boards.load(results)
        assert_same_board(board, boards.load_files(results))
        index = indexing.ResultsIndex(results)
        assert Path(index.location).parent == tmp_path / "tmp" and index.sync().read == 0  # kept between loads
        index.close()
    assert not (results / indexing.INDEX_NAME).exists()


def test_bench_index_builds_updates_and_rebuilds(tmp_path, capsys):
    populate_demo(tmp_path)
    assert main(["index", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "6 record files: 6 read and checked, 0 unchanged, 0 removed; 5 entries shown, 1 left out" in out
    assert DEMO_BAD in out and str(tmp_path / indexing.INDEX_NAME) in out
    assert main(["index", "--results", str(tmp_path)]) == 0
    assert "0 read and checked, 6 unchanged" in capsys.readouterr().out
    assert main(["index", "--results", str(tmp_path), "--rebuild"]) == 0
    assert "6 read and checked, 0 unchanged" in capsys.readouterr().out
    assert main(["index", "--results", str(tmp_path / "missing")]) == 2
    assert "no results folder" in capsys.readouterr().err


def test_bench_compare_reads_units_from_the_index(tmp_path, capsys, monkeypatch):
    accs = paired_accuracies({"A": 0.80, "B": 0.70}, n=200, seed=3)
    paths = [write(tmp_path / "results", make_record(m, PROTOCOL, accs[m])) for m in accs]
    outside = [write(tmp_path / "elsewhere", make_record(m, PROTOCOL, accs[m])) for m in accs]
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    assert main(["compare", *map(str, outside)]) == 0
    straight = capsys.readouterr().out
    boards.load(tmp_path / "results")
    with counting(monkeypatch, boards, "load_record") as checked, counting(monkeypatch, indexing, "units") as unit:
        assert main(["compare", *map(str, paths)]) == 0
        assert checked == [] and unit == []  # checks and unit scores came from the index
    assert capsys.readouterr().out == straight and "A is significantly better than B" in straight


class Toy(Setting):
    """A setting unlike the episodic ones: units in its own run field, paired by a key of its own."""

    name = "toy-setting"
    unit = "toy unit"

    def units(self, record):
        return np.mean([r["scores"] for r in record["runs"]], axis=0)

    def pairing_key(self, record):
        return (record["protocol"]["version"], len(record["runs"][0]["scores"]))

    def section_problem(self, record):
        return None if record["runs"][0]["scores"] else "no scores"


def test_any_registered_setting_is_indexed_through_its_hooks(tmp_path):
    register_setting(Toy())
    try:
        accs = paired_accuracies({"P": 0.8, "Q": 0.5, "R": 0.79}, n=80, seed=4)
        for method, scores in accs.items():
            record = make_record(method, "toy-proto", scores)
            record["setting"] = record["protocol"]["setting"] = "toy-setting"
            record["runs"][0]["scores"] = record["runs"][0].pop("episode_accuracies")
            write_raw(tmp_path, record)
        board = boards.load(tmp_path)
        assert_same_board(board, boards.load_files(tmp_path))
        t = board.table.set_index("method")
        assert t["setting"].unique().tolist() == ["toy-setting"] and t.loc["Q", "rank"] == 2
        assert t.loc["P", "rank"] == t.loc["R", "rank"] == 1 and t.loc["P", "n_units"] == 80
    finally:
        SETTINGS.unregister("toy-setting")


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["a"],
    "properties": {
        "a": {"type": "array", "minItems": 1, "items": {"type": "number", "minimum": 0, "maximum": 1}},
        "n": {"type": "integer"},
        "s": {"type": "string", "pattern": "^[01]+$"},
        "d": {"type": "string", "format": "date-time"},
        "c": {"const": 2},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"x": {"type": "array", "items": {"type": "number", "minimum": 0}}},
            },
        },
    },
}
OK = [0.5] * 40


@pytest.mark.parametrize(
    "instance",
    [
        {"a": OK, "n": 3, "s": "0101", "d": "2025-01-01T00:00:00Z", "c": 2, "runs": [{"x": OK}, {"x": [0.1] * 20}]},
        {"a": OK, "n": 1.0},  # an integer to jsonschema, not to fastjsonschema
        {"a": OK, "s": "0101\n"},  # `$` matches before a final newline in jsonschema's re.search
        {"a": OK, "d": "not a date"},  # formats are not checked without a format checker
        {"a": OK, "c": 2.0},
        {"a": OK, "c": True},
        {"a": OK[:39] + [1.5]},
        {"a": OK[:39] + [-0.1]},
        {"a": OK[:39] + [True]},
        {"a": OK[:39] + ["0.5"]},
        {"a": OK[:39] + [None]},
        {"a": OK[:39] + [float("nan")]},
        {"a": [1] * 39 + [10**400]},
        {"a": [0.5] * 3 + [2.0]},
        {"a": []},
        {"a": OK, "runs": [{"x": OK}, {"x": OK[:30] + [-1]}]},
        {"a": OK, "n": "3"},
    ],
)
def test_compiled_validators_agree_with_jsonschema(instance):
    expected = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(instance))
    try:
        validators.check(instance, SCHEMA)
        got = None
    except jsonschema.ValidationError as e:
        got = e
    assert (got and (got.message, list(got.absolute_path))) == (
        expected and (expected.message, list(expected.absolute_path))
    )
    assert validators._fast_validator(SCHEMA) is not None  # the fast path was tried


def pairwise_ranks(vectors, means, names, alpha=ranking.RANK_ALPHA):
    """The ranking rule as it was written before batching: one paired test per pair."""
    out, remaining, rank = [None] * len(vectors), list(range(len(vectors))), 0
    while remaining:
        rank += 1
        leader = min(remaining, key=lambda i: (-means[i], names[i]))
        out[leader] = ranking.Ranked(rank, math.nan, leader)
        tied = [leader]
        for i in remaining:
            if i != leader:
                test = paired_test(vectors[leader], vectors[i])
                if not ranking.significantly_different(test, alpha):
                    out[i] = ranking.Ranked(rank, test.wilcoxon_pvalue, leader)
                    tied.append(i)
        remaining = [i for i in remaining if i not in tied]
    return out


@pytest.mark.parametrize("n", [20, 40, 51, 600])
def test_batched_ranking_gives_the_pairwise_p_values(n):
    rng = np.random.default_rng(n)
    problems = []
    for _ in range(3):
        base = np.round(rng.uniform(0.3, 0.9, n) * 75) / 75
        vectors = [np.clip(base + np.round(rng.normal(s, 0.05, n) * 75) / 75, 0, 1) for s in (0, -0.01, -0.2, 0)]
        vectors[3] = vectors[0].copy()  # identical results: p = 1
        problems.append((vectors, [float(v.mean()) for v in vectors], ["a", "b", "c", "d"]))
    together = ranking.rank_many(problems)
    for (vectors, means, names), ranked in zip(problems, together):
        assert ranked == pairwise_ranks(vectors, means, names)
        for i, r in enumerate(ranked):
            if not np.isnan(r.p_vs_leader) and not np.array_equal(vectors[i], vectors[r.leader]):
                assert r.p_vs_leader == stats.wilcoxon(vectors[r.leader], vectors[i]).pvalue


def test_the_sweep_benchmark_writes_valid_records_and_checks_its_sizes(tmp_path):
    from benchmark.cli import indexperf

    maker = indexperf.generate(tmp_path, 65)  # thirty protocols, methods 0 to 2
    board = boards.load(tmp_path)
    assert not board.warnings and len(board.table) == 65 and board.table["protocol"].nunique() == 30
    assert sorted(set(board.table["n_seeds"])) == [1, 2, 3] and maker.n_methods == 20
    assert board.table["rank"].notna().all() and set(board.table["method"]) == {"sweep-000", "sweep-001", "sweep-002"}
    with pytest.raises(indexperf.BenchError, match="at least 1"):
        indexperf.main(argparse.Namespace(index=[0], out=None))
