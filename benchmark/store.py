"""Prepared dataset -> uint8 tensor store -> class-contiguous views that episodes index into.

Images are decoded once per (dataset fingerprint, resolution, colour mode) and cached beside the
prepared data as a torch file, so later runs skip decoding; a run needs the cache and manifest only,
not the Arrow files. A view holds one split's images grouped by class, on the training device.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .data import DataError, load_prepared
from .protocols import SplitSpec
from .results import atomic_write_bytes

STORE_VERSION = 1


@dataclass
class TensorStore:
    name: str
    fingerprint: str
    images: torch.Tensor                 # uint8 [M, C, H, W], on the CPU
    columns: dict[str, np.ndarray]       # "label" and any metadata column, one entry per image
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _decode(ds, size: int, channels: int) -> np.ndarray:
    from PIL import Image
    from tqdm.auto import tqdm

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(ds), size, size, channels), dtype=np.uint8)
    col = ds.cast_column("image", type(ds.features["image"])(decode=False))["image"]
    for i, item in enumerate(tqdm(col, desc=f"decoding images to {size}x{size}", unit="img",
                                  mininterval=1.0, disable=len(col) < 2000)):
        img = Image.open(io.BytesIO(item["bytes"])).convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.LANCZOS)
        out[i] = np.asarray(img, dtype=np.uint8).reshape(size, size, channels)
    return out


def _string_columns(ds) -> dict[str, np.ndarray]:
    """Metadata columns as strings; class ids (ClassLabel or int labels, as hub datasets have) become names."""
    import datasets
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
    from .paths import data_dir as resolve
    return _load_store(dataset, image_size, channels, str(resolve(data_dir)))


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
        raise DataError(f"the prepared {dataset} at {prepared.path} has no data files and no image cache "
                        f"for {image_size}px; prepare it again with `bench data prepare {dataset} --force`.") from None
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
    try:
        atomic_write_bytes(cache, buf.getvalue())
    except OSError:
        pass  # a read-only data folder only costs the decode next time
    return TensorStore(prepared.name, fp, images, columns, mean, std)


@dataclass
class EpisodeView:
    """One split: images grouped by class (class c holds rows offsets[c] .. offsets[c]+counts[c]-1)."""
    label: str
    images: torch.Tensor      # uint8 [M, C, H, W]
    offsets: torch.Tensor     # int64 [n_classes]
    counts: torch.Tensor      # int64 [n_classes]
    classes: tuple[str, ...]
    mean: torch.Tensor        # float [C, 1, 1]
    std: torch.Tensor
    data_fingerprint: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "EpisodeView":
        return EpisodeView(self.label, self.images.to(device), self.offsets.to(device), self.counts.to(device),
                           self.classes, self.mean.to(device), self.std.to(device), self.data_fingerprint)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


def build_view(store: TensorStore, split: SplitSpec) -> EpisodeView:
    from .splits import class_split

    keep = np.ones(len(store.images), dtype=bool)
    for col, values in split.where:
        if col not in store.columns:
            raise DataError(f"split {split.label}: dataset {store.name} has no column {col!r}")
        keep &= np.isin(store.columns[col], values)
    labels = store.columns["label"]
    if split.class_split:
        wanted = class_split(split.class_split)[split.part]
        present = set(labels[keep])
        absent = [c for c in wanted if c not in present]
        if absent:
            raise DataError(f"split {split.label}: {len(absent)} of its classes are not in the prepared "
                            f"{store.name} (e.g. {absent[:3]}); the prepared data is incomplete or a different dataset.")
        keep &= np.isin(labels, wanted)
    idx = np.nonzero(keep)[0]
    if idx.size == 0:
        raise DataError(f"split {split.label} selects no images from {store.name}")
    order = np.argsort(labels[idx], kind="stable")
    idx = idx[order]
    names, starts, counts = np.unique(labels[idx], return_index=True, return_counts=True)
    base = store.images[torch.from_numpy(idx)]
    chunks, offsets, all_counts, classes = [], [], [], []
    pos = 0
    for rot in split.rotations:
        k = rot // 90
        chunks.append(torch.rot90(base, k, dims=(2, 3)) if k else base)
        for name, s, c in zip(names, starts, counts):
            offsets.append(pos + int(s))
            all_counts.append(int(c))
            classes.append(name if rot == 0 and split.rotations == (0,) else f"{name}@rot{rot:03d}")
        pos += len(idx)
    images = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    ch = images.shape[1]
    return EpisodeView(split.label, images.contiguous(), torch.tensor(offsets), torch.tensor(all_counts),
                       tuple(classes), torch.tensor(store.mean).view(ch, 1, 1), torch.tensor(store.std).view(ch, 1, 1),
                       store.fingerprint)
