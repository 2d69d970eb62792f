"""Fixed test episodes: a pure function of (protocol, version, split, episode index).

Their class and image indices come from a counter-based hash (splitmix64) in numpy, which gives the
same integers on every machine, library version and device, so every method is scored on exactly
the same episodes. The fingerprint covers the key, the split's classes and every index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..protocols import EpisodeSpec
from ..store import EpisodeView
from .checks import check_fillable

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
    classes: torch.Tensor  # int64 [E, N]
    slots: torch.Tensor  # int64 [E, N, K+Q]
    qperm: torch.Tensor  # int64 [E, N*Q]
    fingerprint: str

    def __len__(self) -> int:
        return self.classes.shape[0]


def fixed_episodes(view: EpisodeView, spec: EpisodeSpec, key: str, count: int, start: int = 0) -> FixedEpisodes:
    """Episodes start .. start+count-1 of the split named by `key` ("protocol:version:split")."""
    check_fillable(view, spec)
    base = np.frombuffer(hashlib.blake2b(key.encode(), digest_size=8).digest(), dtype="<u8")[0]
    with np.errstate(over="ignore"):
        ep = _mix(np.uint64(base) ^ _mix(np.arange(start, start + count, dtype=np.uint64)))  # [E]
        c_ids = np.arange(view.n_classes, dtype=np.uint64)
        ckeys = _mix(ep[:, None] ^ _mix(c_ids ^ _stream(1))[None, :])  # [E, C]
        classes = np.argsort(ckeys, axis=1, kind="stable")[:, : spec.ways]  # [E, N]
        counts = view.counts.cpu().numpy()
        m = int(counts.max())
        ekc = _mix(ep[:, None] ^ _mix(classes.astype(np.uint64) ^ _stream(2)))  # [E, N]
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
    return FixedEpisodes(
        torch.from_numpy(classes.astype(np.int64)),
        torch.from_numpy(slots.astype(np.int64)),
        torch.from_numpy(qperm.astype(np.int64)),
        h.hexdigest(),
    )
