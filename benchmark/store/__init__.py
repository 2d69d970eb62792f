"""Prepared data -> decoded uint8 tensors (cached) -> one split's images grouped by class."""

from .tensors import STORE_VERSION, TensorStore, load_store
from .views import EpisodeView, build_view, rotate, rotation_views, split_rows

__all__ = [
    "STORE_VERSION",
    "TensorStore",
    "load_store",
    "EpisodeView",
    "build_view",
    "rotate",
    "rotation_views",
    "split_rows",
]
