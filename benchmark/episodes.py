"""N-way K-shot Q-query episodes, drawn by index from an `EpisodeView`, in batches, on its device.

Training episodes come from a torch generator on the training device (fast, seeded per run).
Test episodes are a pure function of (protocol, version, split, episode index): their indices come
from a counter-based hash (splitmix64) in numpy, which gives the same integers on every machine,
library version and device, so every method is scored on exactly the same episodes. Query order
is shuffled within each episode so a method cannot read labels off positions.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from .data import DataError
from .protocols import EpisodeSpec
from .store import EpisodeView


@dataclass
class Episodes:
    """A batch of B episodes. Support is class-major: label j's K shots are positions j*K .. j*K+K-1."""
    support_x: torch.Tensor   # float [B, N*K, C, H, W]
    support_y: torch.Tensor   # int64 [B, N*K], values 0..N-1
    query_x: torch.Tensor     # float [B, N*Q, C, H, W]
    query_y: torch.Tensor     # int64 [B, N*Q]
    ways: int
    shots: int

    @property
    def batch_size(self) -> int:
        return self.support_x.shape[0]

    def to(self, device) -> "Episodes":
        return Episodes(self.support_x.to(device), self.support_y.to(device), self.query_x.to(device),
                        self.query_y.to(device), self.ways, self.shots)


def check_fillable(view: EpisodeView, spec: EpisodeSpec) -> None:
    """Fail early, and say why, when the split cannot supply the episodes asked for."""
    if spec.ways > view.n_classes:
        raise DataError(f"{spec.ways}-way episodes need {spec.ways} classes, but split {view.label} has only "
                        f"{view.n_classes}. Use fewer ways or a larger split.")
    need = spec.shots + spec.queries
    short = int((view.counts < need).sum())
    if short:
        smallest = int(view.counts.min())
        raise DataError(f"{spec.shots}-shot {spec.queries}-query episodes need {need} images per class, but "
                        f"{short} class(es) of split {view.label} have fewer (smallest: {smallest}). "
                        f"Lower shots + queries to at most {smallest}.")


def _gather(view: EpisodeView, spec: EpisodeSpec, classes: torch.Tensor, slots: torch.Tensor,
            qperm: torch.Tensor) -> Episodes:
    """classes [B, N] view class ids; slots [B, N, K+Q] within-class positions; qperm [B, N*Q]."""
    b, n = classes.shape
    k, q = spec.shots, spec.queries
    rows = view.offsets[classes].unsqueeze(-1) + slots                  # [B, N, K+Q]
    labels = torch.arange(n, device=rows.device).view(1, n, 1).expand(b, n, k + q)
    s_rows, q_rows = rows[..., :k].reshape(b, n * k), rows[..., k:].reshape(b, n * q)
    s_lab, q_lab = labels[..., :k].reshape(b, n * k), labels[..., k:].reshape(b, n * q)
    q_rows, q_lab = q_rows.gather(1, qperm), q_lab.gather(1, qperm)
    sx = view.normalise(view.images[s_rows])
    qx = view.normalise(view.images[q_rows])
    return Episodes(sx, s_lab.contiguous(), qx, q_lab.contiguous(), n, k)


class EpisodeSampler:
    def __init__(self, view: EpisodeView, spec: EpisodeSpec):
        check_fillable(view, spec)
        self.view, self.spec = view, spec
        self.max_count = int(view.counts.max())

    def sample(self, batch: int, generator: torch.Generator) -> Episodes:
        v, s = self.view, self.spec
        dev = v.device
        classes = torch.rand(batch, v.n_classes, device=dev, generator=generator).argsort(dim=1)[:, :s.ways]
        keys = torch.rand(batch, s.ways, self.max_count, device=dev, generator=generator)
        slot = torch.arange(self.max_count, device=dev)
        keys = keys.masked_fill(slot >= v.counts[classes].unsqueeze(-1), 2.0)  # never pick past a class's end
        slots = keys.argsort(dim=-1)[..., : s.shots + s.queries]
        qperm = torch.rand(batch, s.ways * s.queries, device=dev, generator=generator).argsort(dim=1)
        return _gather(v, s, classes, slots, qperm)

    def episodes(self, index: "FixedEpisodes", start: int, stop: int) -> Episodes:
        dev = self.view.device
        return _gather(self.view, self.spec, index.classes[start:stop].to(dev), index.slots[start:stop].to(dev),
                       index.qperm[start:stop].to(dev))


# ---- fixed test episodes -------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _stream(tag: int) -> np.uint64:
    return _mix(np.array([tag], dtype=np.uint64))[0]


@dataclass
class FixedEpisodes:
    classes: torch.Tensor    # int64 [E, N]
    slots: torch.Tensor      # int64 [E, N, K+Q]
    qperm: torch.Tensor      # int64 [E, N*Q]
    fingerprint: str

    def __len__(self) -> int:
        return self.classes.shape[0]


def fixed_episodes(view: EpisodeView, spec: EpisodeSpec, key: str, count: int, start: int = 0) -> FixedEpisodes:
    """Episodes start .. start+count-1 of the split named by `key` ("protocol:version:split")."""
    check_fillable(view, spec)
    base = np.frombuffer(hashlib.blake2b(key.encode(), digest_size=8).digest(), dtype="<u8")[0]
    with np.errstate(over="ignore"):
        ep = _mix(np.uint64(base) ^ _mix(np.arange(start, start + count, dtype=np.uint64)))     # [E]
        c_ids = np.arange(view.n_classes, dtype=np.uint64)
        ckeys = _mix(ep[:, None] ^ _mix(c_ids ^ _stream(1))[None, :])                            # [E, C]
        classes = np.argsort(ckeys, axis=1, kind="stable")[:, : spec.ways]                     # [E, N]
        counts = view.counts.cpu().numpy()
        m = int(counts.max())
        ekc = _mix(ep[:, None] ^ _mix(classes.astype(np.uint64) ^ _stream(2)))                  # [E, N]
        ikeys = _mix(ekc[..., None] ^ _mix(np.arange(m, dtype=np.uint64) ^ _stream(3))[None, None, :])
        ikeys[np.arange(m)[None, None, :] >= counts[classes][..., None]] = np.iinfo(np.uint64).max
        slots = np.argsort(ikeys, axis=-1, kind="stable")[..., : spec.shots + spec.queries]
        qkeys = _mix(ep[:, None] ^ _mix(np.arange(spec.ways * spec.queries, dtype=np.uint64) ^ _stream(4))[None, :])
        qperm = np.argsort(qkeys, axis=1, kind="stable")
    h = hashlib.sha256()
    h.update(f"{key}|{start}|{count}|{spec}|".encode())
    h.update("\n".join(view.classes).encode())
    h.update(counts.astype("<i8").tobytes())
    for a in (classes, slots, qperm):
        h.update(a.astype("<i8").tobytes())
    return FixedEpisodes(torch.from_numpy(classes.astype(np.int64)), torch.from_numpy(slots.astype(np.int64)),
                         torch.from_numpy(qperm.astype(np.int64)), h.hexdigest())


class ImageBatchSampler:
    """Plain classification batches over a split's classes, for pre-training baselines."""

    def __init__(self, view: EpisodeView):
        self.view = view
        self.row_class = torch.repeat_interleave(torch.arange(view.n_classes, device=view.device), view.counts)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(self.row_class), (batch,), device=self.view.device, generator=generator)
        return self.view.normalise(self.view.images[rows]), self.row_class[rows]
