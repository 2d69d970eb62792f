"""Tensor store -> class-contiguous views of one split, on the training device, that episodes index into."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import DataError
from ..protocols import SplitSpec, class_split
from .tensors import TensorStore


@dataclass
class EpisodeView:
    """One split: images grouped by class (class c holds rows offsets[c] .. offsets[c]+counts[c]-1)."""

    label: str
    images: torch.Tensor  # uint8 [M, C, H, W]
    offsets: torch.Tensor  # int64 [n_classes]
    counts: torch.Tensor  # int64 [n_classes]
    classes: tuple[str, ...]
    mean: torch.Tensor  # float [C, 1, 1]
    std: torch.Tensor
    data_fingerprint: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> EpisodeView:
        return EpisodeView(
            self.label,
            self.images.to(device),
            self.offsets.to(device),
            self.counts.to(device),
            self.classes,
            self.mean.to(device),
            self.std.to(device),
            self.data_fingerprint,
        )

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


def hash_ranks(store: TensorStore, split: SplitSpec, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(rank, stratum size) of every row. Within each stratum (a class and the `where` columns' values) the rows,
    in prepared order, are ranked by a hash of (name, stratum, position): the same order on every machine, for
    every method, independent of which other rows a split keeps."""
    cols = [store.columns["label"], *(store.columns[c] for c, _ in split.where)]
    strata: dict[tuple[str, ...], list[int]] = {}
    for row, key in enumerate(zip(*cols)):
        strata.setdefault(key, []).append(row)
    rank = np.zeros(len(store.images), dtype=np.int64)
    size = np.zeros(len(store.images), dtype=np.int64)
    for key, rows in strata.items():
        stratum = "/".join(key)
        order = sorted(range(len(rows)), key=lambda i: hashlib.sha256(f"{name}|{stratum}|{i}".encode()).digest())
        rank[[rows[i] for i in order]] = np.arange(len(rows))
        size[rows] = len(rows)
    return rank, size


def holdout_mask(store: TensorStore, split: SplitSpec) -> np.ndarray:
    """Rows in the split's holdout part: the first round(fraction * n) of each stratum's n rows in hash order
    (hash_ranks) are "out"."""
    assert split.holdout is not None
    name, fraction, part = split.holdout
    rank, size = hash_ranks(store, split, name)
    out = rank < np.round(fraction * size)
    return out if part == "out" else ~out


def ranks_mask(store: TensorStore, split: SplitSpec) -> np.ndarray:
    """Rows whose rank in their stratum's hash order (hash_ranks) is in the split's [start, stop)."""
    assert split.ranks is not None
    name, start, stop = split.ranks
    rank, _ = hash_ranks(store, split, name)
    return (rank >= start) & (rank < stop)


def class_positions(store: TensorStore) -> np.ndarray:
    """Each row's position among the rows of its class, in prepared order: with the class, an image's identity."""
    labels = store.columns["label"]
    out = np.zeros(len(labels), dtype=np.int64)
    seen: dict[str, int] = {}
    for row, label in enumerate(labels):
        out[row] = seen.get(label, 0)
        seen[label] = out[row] + 1
    return out


def held_out_classes(classes: list[str], holdout: tuple[str, float, str]) -> set[str]:
    """The classes a class holdout keeps: ranked by a hash of (name, class), the first round(fraction * n) are
    "out". A pure function of the class names, so the same classes on every machine."""
    name, fraction, part = holdout
    ranked = sorted(set(classes), key=lambda c: hashlib.sha256(f"{name}|{c}".encode()).digest())
    out = set(ranked[: round(fraction * len(ranked))])
    return out if part == "out" else set(ranked) - out


def split_rows(store: TensorStore, split: SplitSpec) -> np.ndarray:
    """The store rows a split selects, in prepared order (rotations aside)."""
    keep = np.ones(len(store.images), dtype=bool)
    for col, values in split.where:
        if col not in store.columns:
            raise DataError(f"split {split.label}: dataset {store.name} has no column {col!r}")
        keep &= np.isin(store.columns[col], values)
    labels = store.columns["label"]
    if split.class_split or split.classes:
        wanted = split.classes or class_split(split.class_split or "")[split.part or ""]
        present = set(labels[keep])
        absent = [c for c in wanted if c not in present]
        if absent:
            raise DataError(
                f"split {split.label}: {len(absent)} of its classes are not in the prepared "
                f"{store.name} (e.g. {absent[:3]}); the prepared data is incomplete or a different dataset."
            )
        keep &= np.isin(labels, wanted)
    if split.class_holdout is not None:
        keep &= np.isin(labels, sorted(held_out_classes(list(labels[keep]), split.class_holdout)))
    if split.holdout is not None:
        keep &= holdout_mask(store, split)
    if split.ranks is not None:
        keep &= ranks_mask(store, split)
    idx = np.nonzero(keep)[0]
    if idx.size == 0:
        raise DataError(f"split {split.label} selects no images from {store.name}")
    return idx


_ROTATE_CHUNK = 8192  # images per interpolation call: bounds the float64 copies, not the result


def rotate(images: torch.Tensor, degrees: int) -> torch.Tensor:
    """uint8 images [M, C, H, W] turned `degrees` counter-clockwise about their centre. Multiples of 90 are exact
    (torch.rot90); other angles interpolate bilinearly in float64 on the CPU, so the bytes are the same on every
    machine, with each image's border extended into the corners it does not cover (the background, for Omniglot)."""
    if degrees % 90 == 0:
        k = degrees // 90 % 4
        return torch.rot90(images, k, dims=(2, 3)) if k else images
    return bilinear_rotation(images, degrees)


def bilinear_rotation(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """`rotate` by interpolation, for any angle (at multiples of 90 it gives rot90's bytes for square images:
    pixel centres land on pixel centres)."""
    m, c, h, w = images.shape
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    # affine_grid maps output to input coordinates, each axis normalised to [-1, 1]: the aspect terms keep
    # the turn rigid in pixels when H != W
    theta = torch.tensor([[[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]]], dtype=torch.float64)
    grid = F.affine_grid(theta, [1, c, h, w], align_corners=False)
    out = torch.empty(m, c, h, w, dtype=torch.uint8)
    for i in range(0, m, _ROTATE_CHUNK):
        part = images[i : i + _ROTATE_CHUNK].cpu().to(torch.float64)
        turned = F.grid_sample(
            part, grid.expand(len(part), h, w, 2), mode="bilinear", padding_mode="border", align_corners=False
        )
        out[i : i + _ROTATE_CHUNK] = turned.round().clamp(0, 255).to(torch.uint8)
    return out.to(images.device)


# Interpolated rotations of the latest blocks built, keyed by (data fingerprint, rows, angle): a process that
# builds the same rotated split again (one run per method on a protocol, as the tests do) skips recomputing
# a pure function of its key. Bounded, and each use gets its own copy.
_ROTATED: OrderedDict[tuple[str, str, int], torch.Tensor] = OrderedDict()
_ROTATED_KEEP = 8


def _rotated_block(store: TensorStore, rows: np.ndarray, base: torch.Tensor, degrees: int) -> torch.Tensor:
    if degrees % 90 == 0:
        return rotate(base, degrees)
    key = (store.fingerprint, hashlib.sha1(rows.tobytes()).hexdigest(), degrees)
    block = _ROTATED.get(key)
    if block is None:
        block = _ROTATED[key] = rotate(base, degrees)
        while len(_ROTATED) > _ROTATED_KEEP:
            _ROTATED.popitem(last=False)
    _ROTATED.move_to_end(key)
    return block.clone()


def rotation_views(view: EpisodeView, rotations: tuple[int, ...]) -> list[EpisodeView]:
    """The view of a split with several rotations cut into one view per rotation (build_view lays them out as
    consecutive blocks of the same classes): slices of its tensors, no copies."""
    n = len(rotations)
    if n == 0 or view.n_classes % n or len(view.images) % n:
        raise ValueError(f"view {view.label} does not hold {n} equal rotation blocks")
    per_class, per_row = view.n_classes // n, len(view.images) // n
    out = []
    for i, rot in enumerate(rotations):
        classes = view.classes[i * per_class : (i + 1) * per_class]
        suffix = "" if rotations == (0,) else f"@rot{rot:03d}"  # build_view names an unrotated split's classes plainly
        if not all(c.endswith(suffix) for c in classes):
            raise ValueError(f"view {view.label}: block {i} is not rotation {rot} (its classes do not end in {suffix})")
        out.append(
            EpisodeView(
                f"{view.label}#rot{rot:03d}",
                view.images[i * per_row : (i + 1) * per_row],
                view.offsets[i * per_class : (i + 1) * per_class] - i * per_row,
                view.counts[i * per_class : (i + 1) * per_class],
                classes,
                view.mean,
                view.std,
                view.data_fingerprint,
            )
        )
    return out


def view_rows(store: TensorStore, split: SplitSpec) -> np.ndarray:
    """The store rows of the split's (unrotated) view, in its order: grouped by class, prepared order within."""
    idx = split_rows(store, split)
    return idx[np.argsort(store.columns["label"][idx], kind="stable")]


def build_view(store: TensorStore, split: SplitSpec) -> EpisodeView:
    idx = view_rows(store, split)
    labels = store.columns["label"]
    names, starts, counts = np.unique(labels[idx], return_index=True, return_counts=True)
    base = store.images[torch.from_numpy(idx)]
    chunks, offsets, all_counts, classes = [], [], [], []
    pos = 0
    for rot in split.rotations:
        chunks.append(_rotated_block(store, idx, base, rot))
        for name, s, c in zip(names, starts, counts):
            offsets.append(pos + int(s))
            all_counts.append(int(c))
            classes.append(name if rot == 0 and split.rotations == (0,) else f"{name}@rot{rot:03d}")
        pos += len(idx)
    images = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    ch = images.shape[1]
    return EpisodeView(
        split.label,
        images.contiguous(),
        torch.tensor(offsets),
        torch.tensor(all_counts),
        tuple(classes),
        torch.tensor(store.mean).view(ch, 1, 1),
        torch.tensor(store.std).view(ch, 1, 1),
        store.fingerprint,
    )
