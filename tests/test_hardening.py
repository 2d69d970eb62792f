"""Records and options a careless or hostile user can make: each is a clear error or a warning on the
page, never a hang, a traceback, or a record that takes over the board."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest
from recordkit import make_record, paired_accuracies, write, write_raw

from benchmark.cli.main import main
from benchmark.core.errors import BenchError
from benchmark.page import board as boards
from benchmark.records import InvalidRecord, read_record
from benchmark.run import RunConfig

PROTOCOL = "omniglot-5w1s"


def test_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "record.json"
    os.mkfifo(fifo)
    good = write(tmp_path / "r", make_record("A", PROTOCOL, [0.5, 0.6]))
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(main(["compare", str(fifo), str(good)])), daemon=True)
    t.start()
    t.join(timeout=20)
    assert done == [2], "bench compare blocked on a FIFO"
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("depth", [200_000, 5_000])
def test_deep_json_is_an_invalid_record(tmp_path, capsys, depth):
    path = tmp_path / "deep.json"
    rec = make_record("A", PROTOCOL, [0.5, 0.6])
    if depth > 10_000:
        path.write_text("[" * depth + "]" * depth)
    else:  # valid JSON that parses, with a deep value inside: the schema check must not crash either
        body = json.dumps(rec)
        path.write_text(body[:-1] + ', "notes": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(InvalidRecord):
        read_record(path)
    assert main(["compare", str(path), str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_records_are_written_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        path = write(tmp_path, make_record("A", PROTOCOL, [0.5, 0.6]))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_record_dated_in_the_future_does_not_replace_the_real_one(tmp_path):
    accs = paired_accuracies({"real": 0.6, "spoof": 0.99}, n=30)
    write(tmp_path, make_record("A", PROTOCOL, accs["real"], created="2026-01-01T00:00:00Z", run_id="real"))
    write(tmp_path, make_record("A", PROTOCOL, accs["spoof"], created="2999-01-01T00:00:00Z", run_id="spoof"))
    board = boards.load(tmp_path)
    assert board.table["run_id"].tolist() == ["real"]
    (skipped,) = board.warnings
    assert "spoof" in skipped.path and "in the future" in skipped.reason


def test_hostile_names_go_to_warnings_not_to_a_crash(tmp_path):
    write(tmp_path, make_record("A", PROTOCOL, [0.5, 0.6]))
    bad = make_record("A", PROTOCOL, [0.5, 0.6], run_id="abs")
    bad["method"]["name"] = "/etc/passwd"
    write_raw(tmp_path, {**bad, "method": {**bad["method"], "name": "x"}})  # filed somewhere findable
    raw = tmp_path / "few-shot" / PROTOCOL / "x" / "abs.json"
    raw.write_text(json.dumps(bad))
    board = boards.load(tmp_path)
    assert len(board.table) == 1 and any("abs.json" in w.path for w in board.warnings)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(episodes=100_000_000), "--episodes"),
        (dict(max_train_time=float("nan")), "--max-train-time"),
        (dict(max_train_time=-5.0), "--max-train-time"),
        (dict(seeds=(1, 1)), "twice"),
    ],
)
def test_run_settings_are_checked_before_any_work(kw, message):
    with pytest.raises(BenchError, match=message):
        RunConfig("protonet", (PROTOCOL,), **kw)


@pytest.mark.parametrize(
    "hparam, message",
    [
        ("lr=nan", "lr"),
        ("meta_batch=0", "meta_batch"),
        ("train_ways=-3", "train_ways"),
        ("lr=-1", "lr"),
    ],
)
def test_bad_hyper_parameters_are_clear_errors(hparam, message, tmp_path, capsys):
    rc = main(
        [
            "evaluate",
            "--method",
            "protonet",
            "--hparam",
            hparam,
            "--data-dir",
            str(tmp_path / "none"),
            "--results",
            str(tmp_path / "r"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("device", ["cuda:9", "gpu0", "tpu"])
def test_bad_devices_are_clear_errors(device, tmp_path, capsys):
    rc = main(["evaluate", "--device", device, "--data-dir", str(tmp_path / "none"), "--results", str(tmp_path)])
    assert rc == 2 and "--device" in capsys.readouterr().err


def test_a_typo_in_the_method_is_named_before_the_data(tmp_path, capsys):
    rc = main(["evaluate", "--method", "protonett", "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and "protonett" in err and "Did you mean 'protonet'" in err and "not prepared" not in err


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_the_leaderboard_server_stops_with_bench(tmp_path, sig):
    """`kill <pid of bench leaderboard>` must not leave Streamlit serving on its port."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    from benchmark.cli.serve import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "leaderboard", "--port", str(port), "--results", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        deadline = time.time() + 120
        while not listening():
            assert proc.poll() is None and time.time() < deadline, "the server did not start"
            time.sleep(0.3)
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=30)
        deadline = time.time() + 20
        while listening() and time.time() < deadline:
            time.sleep(0.3)
        assert not listening(), f"streamlit still serves on port {port} after {sig} to bench"
    finally:
        if proc.poll() is None:
            proc.kill()
