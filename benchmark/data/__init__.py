"""Official archives -> Hugging Face `datasets` on disk (prepare) -> back again (load)."""
from .prepare import (DataError, DatasetSpec, DATASETS, ensure_prepared, load_prepared, prepare, PreparedData,
                      read_manifest_if_prepared)

__all__ = ["DataError", "DatasetSpec", "DATASETS", "ensure_prepared", "load_prepared", "prepare", "PreparedData",
           "read_manifest_if_prepared"]
from . import builders  # noqa: E402,F401  (registers the datasets)
from . import extra  # noqa: E402,F401
