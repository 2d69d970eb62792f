"""Prepared dataset -> uint8 tensor store (decoded once, cached per resolution).

Images are decoded once per (dataset fingerprint, resolution, colour mode) and cached beside the
prepared data as a numpy .npz (arrays only: loading it cannot run code), so later runs skip decoding;
a run needs the cache and manifest only, not the Arrow files. A store's fingerprint covers its exact
pixels and labels, so an edited cache changes the fingerprint a record keeps (and fails the cache's own
check); prepared files are checked against their manifest before they are decoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..core import paths
from ..core.errors import DataError
from ..core.files import atomic_write_bytes, sha256_file
from ..data import PreparedData, load_prepared

STORE_VERSION = 2  # 2: numpy .npz (no pickles), keyed by content


@dataclass
class TensorStore:
    name: str
    fingerprint: str
    images: torch.Tensor  # uint8 [M, C, H, W], on the CPU
    columns: dict[str, np.ndarray]  # "label" and any metadata column, one entry per image
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _decode_one(raw: bytes, size: int, mode: str, channels: int) -> np.ndarray:
    img = Image.open(io.BytesIO(raw)).convert(mode)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).reshape(size, size, channels)


def _decode(ds, size: int, channels: int) -> np.ndarray:
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(ds), size, size, channels), dtype=np.uint8)
    col = ds.cast_column("image", type(ds.features["image"])(decode=False))["image"]
    # Pillow releases the GIL while it decodes and resamples, so threads use every core without copying
    # the encoded bytes into other processes
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        decoded = pool.map(lambda item: _decode_one(item["bytes"], size, mode, channels), col)
        for i, arr in enumerate(
            tqdm(decoded, total=len(col), desc=f"decoding images to {size}x{size}", unit="img", mininterval=1.0,
                 disable=len(col) < 2000)
        ):  # fmt: skip
            out[i] = arr
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


def content_fingerprint(prepared_fp: str, images: np.ndarray, labels: np.ndarray) -> str:
    """What a run's data fingerprint is: the prepared data's, and the exact pixels and labels it decoded to,
    so an edited cache or prepared file changes it."""
    h = hashlib.sha256(f"{prepared_fp}|{images.shape}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update("\n".join(labels.tolist()).encode())
    return h.hexdigest()


def _read_cache(path: Path) -> dict | None:
    """The cached arrays, or None when the file is not one (npz without pickles: loading runs no code)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    needed = {"images", "mean", "std", "prepared", "content", "col:label"}
    return arrays if needed <= set(arrays) else None


def _write_cache(
    path: Path,
    prepared_fp: str,
    content: str,
    images: np.ndarray,
    columns: dict[str, np.ndarray],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> None:
    buf = io.BytesIO()
    arrays: dict[str, np.ndarray] = {
        "images": images,
        "mean": np.asarray(mean),
        "std": np.asarray(std),
        "prepared": np.asarray(prepared_fp),
        "content": np.asarray(content),
        **{f"col:{k}": v.astype(str) for k, v in columns.items()},
    }
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub takes the keywords for allow_pickle
    with contextlib.suppress(OSError):  # a read-only data folder only costs the decode next time
        atomic_write_bytes(path, buf.getvalue())


@lru_cache(maxsize=8)
def _load_store(dataset: str, image_size: int, channels: int, data_dir: str) -> TensorStore:
    prepared = load_prepared(dataset, data_dir)
    fp = prepared.fingerprint
    cache_dir = prepared.path / "cache" if prepared.path.is_dir() else Path(data_dir or ".") / "cache"
    cache = cache_dir / f"store-v{STORE_VERSION}-{image_size}px-c{channels}-{fp[:16]}.npz"
    blob = _read_cache(cache) if cache.is_file() else None
    if blob is not None and str(blob["prepared"]) == fp:
        columns = {k[4:]: v for k, v in blob.items() if k.startswith("col:")}
        content = content_fingerprint(fp, blob["images"], columns["label"])
        if content == str(blob["content"]):
            return TensorStore(
                prepared.name,
                content,
                torch.from_numpy(blob["images"]),
                columns,
                tuple(map(float, blob["mean"])),
                tuple(map(float, blob["std"])),
            )
        print(f"note: the image cache {cache} does not match its own checksum (edited or damaged); decoding again")
    try:
        ds = prepared.dataset()
    except FileNotFoundError:
        raise DataError(
            f"the prepared {dataset} at {prepared.path} has no data files and no usable image cache "
            f"for {image_size}px; prepare it again with `bench data prepare {dataset} --force`."
        ) from None
    verify_prepared_files(prepared)
    arr = _decode(ds, image_size, channels)
    images = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
    columns = _string_columns(ds)
    f = torch.from_numpy(images).float().div_(255)
    mean = tuple(float(v) for v in f.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in f.std(dim=(0, 2, 3)).clamp_min(1e-3))
    del f
    content = content_fingerprint(fp, images, columns["label"])
    _write_cache(cache, fp, content, images, columns, mean, std)
    return TensorStore(prepared.name, content, torch.from_numpy(images), columns, mean, std)


def verify_prepared_files(prepared: PreparedData) -> None:
    """Check the prepared files against the sha256s their manifest recorded, before decoding them."""
    expected = prepared.manifest.get("files_sha256")
    if not expected or not prepared.path.is_dir():
        return  # a dataset adopted from elsewhere (hub, save_to_disk folder) has no manifest of ours
    changed = [
        rel
        for rel, digest in expected.items()
        if (prepared.path / rel).is_file() and sha256_file(prepared.path / rel) != digest
    ]
    if changed:
        raise DataError(
            f"the prepared {prepared.name} at {prepared.path} was modified after it was prepared ({len(changed)} "
            f"file(s) differ from its manifest, e.g. {changed[0]}); prepare it again with "
            f"`bench data prepare {prepared.name} --force`."
        )
