"""Few-shot under domain shift (rotated-omniglot-dg-*): the record section (the reference beside the target,
its consistency checks, how the setting's two parts keep their records apart) and the page's table."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from test_domain_generalisation import dg_record

from benchmark.core.errors import InvalidRecord
from benchmark.protocols import PROTOCOLS
from benchmark.records import mean_ci, validate
from benchmark.settings import SETTINGS, check_record
from benchmark.settings.base import Scored

DG = ["rotated-omniglot-dg-5w1s", "rotated-omniglot-dg-20w1s"]
SOURCES = (0, 15, 30, 45, 60)


# --- the record section ------------------------------------------------------------------------------------


def shift_record(method: str, targets, references, created="2026-01-01T00:00:00Z", protocol: str = DG[0]) -> dict:
    """A valid episodic domain-generalisation record built with the setting's own hooks."""
    setting = SETTINGS.get("domain-generalisation")
    p = PROTOCOLS.get(protocol)
    runs = []
    for seed, (t, r) in enumerate(zip(targets, references)):
        ref = setting.for_protocol(protocol).run_section(Scored(np.asarray(r, dtype=float), 1.0))
        block = {"split": p.stages[0].test[0].label, **{k: ref[k] for k in ("episode_accuracies", "mean", "ci95", "n")}}
        scored = Scored(np.asarray(t, dtype=float), 1.0, {"reference": block})
        timing = {"train_steps": 10, "train_time_s": 1.0, "eval_time_s": 1.0}
        runs.append({"seed": seed, **setting.run_section(scored), **timing, "reference": block,
                     "selection": {"rule": "best-val", "chosen_step": 10}})  # fmt: skip
    record = {
        "schema_version": 2,
        "run_id": f"{method}-{protocol}",
        "created": created,
        "kind": "evaluation",
        "setting": "domain-generalisation",
        "protocol": {
            **p.summary(),
            "test_episodes": len(targets[0]),
            "episodes_fingerprint": "target-fp",
            "source_domains": [f"rot{r:03d}" for r in SOURCES],
            "target_domain": "rot075",
            "reference_domain": "rot000",
            "reference_split": p.stages[0].test[0].label,
            "reference_fingerprint": "reference-fp",
        },
        "method": {"name": method, "backbone": "conv4", "hparams": {"lr": 0.001}, "recipe": None},
        "seeds": list(range(len(runs))),
        "runs": runs,
        "summary": {**setting.summary_section(runs), "train_time_s": 1.0, "eval_time_s": 1.0},
        "device": {"type": "cpu", "name": "test-cpu"},
        "environment": {"python": "3.11", "torch": "2.3.0"},
        "code": {"git_commit": "0" * 40, "git_dirty": False},
        "data": {"omniglot": "fp"},
    }
    validate(record)
    check_record(record)
    return record


def test_record_section_holds_the_reference_and_catches_edits():
    setting = SETTINGS.get("domain-generalisation")
    target = [[0.6, 0.8, 1.0, 0.4], [0.8, 0.8, 0.6, 0.4]]
    reference = [[1.0, 0.8, 1.0, 0.8], [0.8, 1.0, 1.0, 0.6]]
    record = shift_record("protonet", target, reference)
    s = record["summary"]
    assert s["mean"] == pytest.approx(0.675) and s["reference_mean"] == pytest.approx(0.875)
    drop = np.mean(reference, axis=0) - np.mean(target, axis=0)
    assert s["drop_ci95"] == pytest.approx(mean_ci(drop).ci95) and s["reference_ci95"] > 0
    assert list(setting.units(record)) == pytest.approx(list(np.mean(target, axis=0)))  # ranked: the target
    assert list(setting.recorded_units(record["runs"][0])) == target[0] + reference[0]  # verified: both
    assert setting.pairing_key(record)[1] == "target-fp"

    def edited(path: str, value=None) -> dict:
        out = copy.deepcopy(record)
        *where, last = path.split("/")
        obj = out
        for k in where:
            obj = obj[int(k)] if k.isdigit() else obj[k]
        if value is None:
            del obj[last]
        else:
            obj[last] = value
        return out

    cases = {
        "runs/0/reference/mean": (0.5, "reference: recorded mean"),
        "runs/0/reference/split": ("omniglot/elsewhere", "not the protocol's reference split"),
        "runs/1/reference/episode_accuracies": ([1.0, 1.0, 1.0], "3 episodes scored"),
        "summary/reference_mean": (0.5, "summary reference_mean"),
        "summary/drop_ci95": (0.3, "drop_ci95"),
        "summary/reference_ci95": (0.01, "reference_ci95"),
    }
    for path, (value, message) in cases.items():
        assert message in setting.section_problem(edited(path, value)), path
    with pytest.raises(InvalidRecord, match="runs/0/.*'reference' is a required property"):
        check_record(edited("runs/0/reference"))
    with pytest.raises(InvalidRecord, match="reference_fingerprint"):
        check_record(edited("protocol/reference_fingerprint", 7))
    # a classification record and an episodic one of the same setting are never paired
    pacs = dg_record("erm", "photo", [[1, 0, 1, 1]], [0.5])
    assert "classifies images" in setting.pairing_problem(record, pacs)
    assert setting.pairing_problem(record, shift_record("mldg", target, reference)) is None


# --- the page --------------------------------------------------------------------------------------------


def _populate(results: Path) -> None:
    from benchmark.records import write_record

    rng = np.random.default_rng(0)
    for protocol in DG:
        truth = rng.random((2, 60))
        q = 5 * 15 if protocol == DG[0] else 20 * 15
        good, weak = np.round(np.clip(truth[0], 0, 1) * q) / q, np.round(0.3 * truth[1] * q) / q
        write_record(results, shift_record("mldg", [good], [np.minimum(good + 0.1, 1)], protocol=protocol))
        write_record(results, shift_record("protonet", [weak], [np.minimum(weak + 0.3, 1)], protocol=protocol))


def test_page_table_has_target_reference_and_drop(tmp_path):
    from benchmark.page import board as boards
    from benchmark.page.domains import domain_tables, shift_tables

    _populate(tmp_path)
    board = boards.load(tmp_path)
    assert not board.warnings, board.warnings
    rows = board.table[board.table["setting"] == "domain-generalisation"]
    assert domain_tables(rows, lambda _p: None) == []  # the DomainBed table is for classification families
    [(family, table)] = shift_tables(rows, lambda path: board.records[path]["summary"])
    assert family == "rotated-omniglot-dg"
    assert list(table.columns) == [
        "Protocol", "Rank", "Method", "Backbone", "Target (%)", "Reference (%)", "Drop (points)", "Seeds"
    ]  # fmt: skip
    assert table["Protocol"].tolist() == [DG[1], DG[1], DG[0], DG[0]]  # sorted by name, then rank
    assert table["Method"].tolist() == ["mldg", "protonet"] * 2 and table["Rank"].tolist() == [1, 2, 1, 2]
    for _, row in table.iterrows():
        path = rows[(rows["method"] == row["Method"]) & (rows["protocol"] == row["Protocol"])]["path"].item()
        s = board.records[path]["summary"]
        assert row["Drop (points)"] == f"{100 * (s['reference_mean'] - s['mean']):+.2f} ± {100 * s['drop_ci95']:.2f}"
        assert row["Target (%)"].startswith(f"{100 * s['mean']:.2f}")


def test_the_page_shows_the_shift_table_and_episode_columns(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _populate(tmp_path)
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path))
    app = Path(__file__).resolve().parents[1] / "leaderboards" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=90).run()
    assert not at.exception, at.exception
    headings = [h.value for h in at.subheader]
    assert any(h.startswith("rotated-omniglot-dg: few-shot accuracy in an unseen domain") for h in headings)
    frames = [f.value for f in at.dataframe]
    assert any("Drop (points)" in f.columns for f in frames)
    per_protocol = [f for f in frames if "Accuracy (%)" in f.columns and "Rank" in f.columns]
    assert per_protocol and all("Episodes" in f.columns and "Images" not in f.columns for f in per_protocol)
