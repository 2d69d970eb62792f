"""What a record says about the code and software that produced it."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("torch", "pytorch-lightning", "numpy", "datasets", "scipy", "metabench")


def environment() -> dict:
    def version(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "platform": platform.platform(), **{p: version(p) for p in PACKAGES}}


def git_info() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = (
            bool(
                subprocess.run(
                    ["git", "status", "--porcelain", "--untracked-files=no"],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
            )
            if commit
            else None
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    if commit is None and os.environ.get("BENCH_GIT_COMMIT"):
        # a copy of the tree without .git (e.g. shipped to a GPU machine) says which commit it is
        commit = os.environ["BENCH_GIT_COMMIT"]
    return {"git_commit": commit, "git_dirty": dirty}
