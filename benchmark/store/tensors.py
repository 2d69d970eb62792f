"""Prepared dataset -> uint8 tensor store (decoded once, cached per resolution).

Images are decoded once per (dataset fingerprint, resolution, colour mode) and cached beside the
prepared data as a torch file, so later runs skip decoding; a run needs the cache and manifest only,
not the Arrow files.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..core import paths
from ..core.errors import DataError
from ..core.files import atomic_write_bytes
from ..data import load_prepared

STORE_VERSION = 1


@dataclass
class TensorStore:
    name: str
    fingerprint: str
    images: torch.Tensor  # uint8 [M, C, H, W], on the CPU
    columns: dict[str, np.ndarray]  # "label" and any metadata column, one entry per image
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _decode(ds, size: int, channels: int) -> np.ndarray:
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(ds), size, size, channels), dtype=np.uint8)
    col = ds.cast_column("image", type(ds.features["image"])(decode=False))["image"]
    for i, item in enumerate(
        tqdm(col, desc=f"decoding images to {size}x{size}", unit="img", mininterval=1.0, disable=len(col) < 2000)
    ):
        img = Image.open(io.BytesIO(item["bytes"])).convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.LANCZOS)
        out[i] = np.asarray(img, dtype=np.uint8).reshape(size, size, channels)
    return out


def _string_columns(ds) -> dict[str, np.ndarray]:
    """Metadata columns as strings; class ids (ClassLabel or int labels, as hub datasets have) become names."""
    import datasets  # heavy, and only needed when images are decoded

    out = {}
    for c, feat in ds.features.items():
        if c == "image":
            continue
        if isinstance(feat, datasets.ClassLabel):
            out[c] = np.asarray(feat.int2str(ds[c])).astype(str)
        elif isinstance(feat, datasets.Value) and (feat.dtype in ("string", "large_string") or c == "label"):
            out[c] = np.asarray(ds[c]).astype(str)
    return out


def load_store(dataset: str, image_size: int, channels: int, data_dir: str | os.PathLike | None = None) -> TensorStore:
    # resolve the folder first so the in-process cache follows $BENCH_DATA_DIR changes
    return _load_store(dataset, image_size, channels, str(paths.data_dir(data_dir)))


@lru_cache(maxsize=8)
def _load_store(dataset: str, image_size: int, channels: int, data_dir: str) -> TensorStore:
    prepared = load_prepared(dataset, data_dir)
    fp = prepared.fingerprint
    cache_dir = prepared.path / "cache" if prepared.path.is_dir() else Path(data_dir or ".") / "cache"
    cache = cache_dir / f"store-v{STORE_VERSION}-{image_size}px-c{channels}-{fp[:16]}.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=False)
        if blob.get("fingerprint") == fp:
            return TensorStore(prepared.name, fp, blob["images"], blob["columns"], blob["mean"], blob["std"])
    try:
        ds = prepared.dataset()
    except FileNotFoundError:
        raise DataError(
            f"the prepared {dataset} at {prepared.path} has no data files and no image cache "
            f"for {image_size}px; prepare it again with `bench data prepare {dataset} --force`."
        ) from None
    arr = _decode(ds, image_size, channels)
    images = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    columns = _string_columns(ds)
    f = images.float().div_(255)
    mean = tuple(float(v) for v in f.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in f.std(dim=(0, 2, 3)).clamp_min(1e-3))
    del f
    blob = {"fingerprint": fp, "images": images, "columns": columns, "mean": mean, "std": std}
    buf = io.BytesIO()
    torch.save(blob, buf)
    with contextlib.suppress(OSError):  # a read-only data folder only costs the decode next time
        atomic_write_bytes(cache, buf.getvalue())
    return TensorStore(prepared.name, fp, images, columns, mean, std)
