"""One crafted record must never take the page down: each lands in the "left out" panel, and every string
from a record is shown as text."""

from __future__ import annotations

import json
from pathlib import Path

from recordkit import make_record, write
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "leaderboards" / "app.py"


def plant(results: Path, rel: str, content: str) -> None:
    path = results / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def test_the_page_survives_hostile_records(tmp_path, monkeypatch):
    write(tmp_path, make_record("A", "omniglot-5w1s", [0.5, 0.6, 0.7]))
    base = make_record("B", "omniglot-5w1s", [0.4, 0.5, 0.6], run_id="hostile")
    abs_name = json.loads(json.dumps(base))
    abs_name["method"]["name"] = "/etc/passwd"
    plant(tmp_path, "few-shot/omniglot-5w1s/x/abs.json", json.dumps(abs_name))
    plant(tmp_path, "few-shot/omniglot-5w1s/x/deep.json", "[" * 100_000 + "]" * 100_000)
    markdown = json.loads(json.dumps(base))
    markdown["setting"] = markdown["protocol"]["setting"] = "![x](https://example.invalid/pixel.png)"
    plant(tmp_path, "few-shot/omniglot-5w1s/x/markdown.json", json.dumps(markdown))
    future = make_record("A", "omniglot-5w1s", [0.99, 0.99, 0.99], created="2999-01-01T00:00:00Z", run_id="future")
    write(tmp_path, future)
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == [
        "few-shot",
        "cross-domain",
        "domain-generalisation",
        "continual",
        "noisy-labels",
        "Studies",
    ]  # none from a record
    left_out = " ".join(str(t.value) for t in at.table)
    for name in ("abs.json", "deep.json", "markdown.json", "future.json"):
        assert name in left_out
    shown = at.tabs[0].dataframe[-1].value
    assert shown["Method"].tolist() == ["A"] and shown["Run"].tolist() != ["future"]
    page_text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "](https://example.invalid" not in page_text  # nothing a browser would fetch
