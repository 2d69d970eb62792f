"""Official archives -> Hugging Face `datasets` on disk (prepare) -> back again (load)."""

from .prepare import (
    DATASETS,
    DataError,
    DatasetSpec,
    PreparedData,
    ensure_prepared,
    load_prepared,
    prepare,
    read_manifest_if_prepared,
)

__all__ = [
    "DataError",
    "DatasetSpec",
    "DATASETS",
    "ensure_prepared",
    "load_prepared",
    "prepare",
    "PreparedData",
    "read_manifest_if_prepared",
]
from . import builders, cifar, extra  # noqa: E402,F401  (importing them registers the datasets)
