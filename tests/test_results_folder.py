"""The records this repository ships stay readable as the schema moves on: every file under results/ loads
(older schema versions migrated in memory), passes its setting's checks and appears on the board."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.page import board as boards
from benchmark.records import read_record

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_every_shipped_record_loads_and_is_shown():
    files = sorted(RESULTS.rglob("*.json"))
    assert files, "results/ holds no records"
    board = boards.load(RESULTS, latest_only=False)
    assert not board.warnings, board.warnings
    assert len(board.table) == len(files)
    for path in files:
        raw = json.loads(path.read_text())
        record = read_record(path)
        assert record["schema_version"] == 2 and record["setting"] == raw["protocol"]["setting"]
        if raw["schema_version"] == 1:  # migrated: the file itself is left as it was written
            assert record["method"]["recipe"] is None
            assert all(r["selection"] == {"rule": "final"} for r in record["runs"])
