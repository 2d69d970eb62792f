"""Where things live: the prepared-data folder, the dataset sources, the results folder.

Each is an option on the command line first, then an environment variable, then a default.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "BENCH_DATA_DIR"
SOURCE_ENV = "BENCH_SOURCE"  # a folder holding one sub-folder per dataset, as ../shared/data does
RESULTS_ENV = "BENCH_RESULTS_DIR"


def data_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return Path("~/.cache/metabench").expanduser()


def results_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get(RESULTS_ENV) or "results")


def source_env_var(name: str) -> str:
    """Per-dataset override, e.g. BENCH_SOURCE_OMNIGLOT or BENCH_SOURCE_MINI_IMAGENET."""
    return f"{SOURCE_ENV}_{name.upper().replace('-', '_')}"
