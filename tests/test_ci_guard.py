"""A CI run without the real datasets must fail, not pass by skipping every real-data test; locally the
skip stays, and the summary says how many were skipped and why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/test_data.py::test_prepared_omniglot"  # one test that needs the real data


def run_pytest(tmp_path, **env) -> subprocess.CompletedProcess:
    missing = tmp_path / "no-data-here"
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "BENCH_SOURCE")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
        cwd=ROOT,
        env={**clean, "BENCH_SHARED_DATA": str(missing), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_data_fails_under_ci_and_names_the_path(tmp_path):
    done = run_pytest(tmp_path, CI="true")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "no-data-here" in out and "the real datasets are missing" in out and "requires them" in out


def test_missing_data_skips_locally_with_a_reason(tmp_path):
    done = run_pytest(tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "1 skipped" in out and "SKIPPED" in out and "real datasets not found" in out
