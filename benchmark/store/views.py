"""Tensor store -> class-contiguous views of one split, on the training device, that episodes index into."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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


def build_view(store: TensorStore, split: SplitSpec) -> EpisodeView:
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
