"""Serve the leaderboard: run the Streamlit page (leaderboards/app.py) over a results folder.

The page runs in a child process (`python -m streamlit run ...`) because Streamlit owns its
process (signals, event loop, its own argv); `launch` blocks until that process ends and returns
its exit code, which is what `bench leaderboard` hands back to the shell.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import leaderboards


def app_path() -> Path:
    """leaderboards/app.py from the installed (or checked-out) package, wherever it lives."""
    return Path(leaderboards.__file__).resolve().parent / "app.py"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process may still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_command(results_dir: str | Path, port: int, headless: bool = True, address: str | None = None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.port",
        str(port),
        "--server.headless",
        "true" if headless else "false",
        "--browser.gatherUsageStats",
        "false",
    ]
    if address:
        cmd += ["--server.address", address]
    # The page reads records only; an absolute path keeps that true whatever its working folder.
    return cmd + ["--", "--results", str(Path(results_dir).resolve())]


def child_env() -> dict[str, str]:
    """Our environment, plus the folder that holds `benchmark`, so the page imports the same code
    as the launcher even when the project is used from a checkout rather than installed."""
    env = dict(os.environ)
    # Two folders up from this file is the one holding the benchmark package; resources.files() would not do, as an
    # editable install can make `benchmark` a namespace package with a non-folder path entry.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the launcher dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the signal handlers below still cover SIGTERM and SIGHUP
        pass


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def launch(results_dir: str | Path, port: int | None = None, headless: bool = True) -> int:
    """Run the page until it ends; SIGTERM or SIGHUP to this process stops it too, as Ctrl-C does."""
    port = port or free_port()
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        print(f"note: {results_dir} does not exist yet; the leaderboard will be empty", file=sys.stderr)
    print(f"leaderboard for {results_dir.resolve()} at http://localhost:{port}", file=sys.stderr)
    proc = subprocess.Popen(
        build_command(results_dir, port, headless),
        env=child_env(),
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )

    def on_signal(signum, _frame):
        _stop(proc)
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            # a blocking wait() would not wake for a signal that the kernel hands to another thread
            # (torch starts several); polling returns to the interpreter, which runs the handler
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:
        # Ctrl-C reached Streamlit as well (same process group); give it time to shut down cleanly.
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
