"""N-way K-shot Q-query episodes, drawn by index from an `EpisodeView`, in batches, on its device.

Training episodes come from a torch generator on the training device (fast, seeded per run); test
episodes are gathered from a `FixedEpisodes` index (fixed.py). Query order is shuffled within each
episode so a method cannot read labels off positions. Support is class-major, except for methods that read
the support set as a sequence (`shuffled_support`): they get it in a shuffled order that is a pure function of
the episode's own class and image indices (`support_order`), so every sequence reader sees the same sequence,
test episodes keep their fingerprint, and training episodes cost no extra random draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..protocols import EpisodeSpec
from ..store import EpisodeView
from .checks import check_fillable
from .fixed import FixedEpisodes


@dataclass
class Episodes:
    """A batch of B episodes. Support is class-major (label j's K shots are positions j*K .. j*K+K-1), or in
    `support_order` for a sampler built with shuffle_support."""

    support_x: torch.Tensor  # float [B, N*K, C, H, W]
    support_y: torch.Tensor  # int64 [B, N*K], values 0..N-1
    query_x: torch.Tensor  # float [B, N*Q, C, H, W]
    query_y: torch.Tensor  # int64 [B, N*Q]
    ways: int
    shots: int

    @property
    def batch_size(self) -> int:
        return self.support_x.shape[0]

    def to(self, device) -> Episodes:
        return Episodes(
            self.support_x.to(device),
            self.support_y.to(device),
            self.query_x.to(device),
            self.query_y.to(device),
            self.ways,
            self.shots,
        )


_MASK31 = 0x7FFFFFFF


def support_order(classes: torch.Tensor, slots: torch.Tensor, shots: int) -> torch.Tensor:
    """A permutation [B, N*K] of the class-major support positions: the order of a 31-bit integer hash of each
    shot's (class id, within-class position). The keys depend on view class ids and image positions, never on
    the labels 0..N-1 (which follow the order of `classes`), so the order says nothing about the labels; and
    it is the same integers on every device (int64 arithmetic, no overflow: keys < 2**31, multiplier < 2**27)."""
    b, n = classes.shape
    h = (classes.unsqueeze(-1) * 65537 + slots[..., :shots] + 0x2545F491) & _MASK31
    for _ in range(3):
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & _MASK31
    return torch.argsort(h.reshape(b, n * shots), dim=1, stable=True)


def _gather(
    view: EpisodeView,
    spec: EpisodeSpec,
    classes: torch.Tensor,
    slots: torch.Tensor,
    qperm: torch.Tensor,
    shuffle_support: bool = False,
) -> Episodes:
    """classes [B, N] view class ids; slots [B, N, K+Q] within-class positions; qperm [B, N*Q]."""
    b, n = classes.shape
    k, q = spec.shots, spec.queries
    rows = view.offsets[classes].unsqueeze(-1) + slots  # [B, N, K+Q]
    labels = torch.arange(n, device=rows.device).view(1, n, 1).expand(b, n, k + q)
    s_rows, q_rows = rows[..., :k].reshape(b, n * k), rows[..., k:].reshape(b, n * q)
    s_lab, q_lab = labels[..., :k].reshape(b, n * k), labels[..., k:].reshape(b, n * q)
    q_rows, q_lab = q_rows.gather(1, qperm), q_lab.gather(1, qperm)
    if shuffle_support:
        order = support_order(classes, slots, k)
        s_rows, s_lab = s_rows.gather(1, order), s_lab.gather(1, order)
    sx = view.normalise(view.images[s_rows])
    qx = view.normalise(view.images[q_rows])
    return Episodes(sx, s_lab.contiguous(), qx, q_lab.contiguous(), n, k)


class EpisodeSampler:
    def __init__(self, view: EpisodeView, spec: EpisodeSpec, shuffle_support: bool = False):
        check_fillable(view, spec)
        self.view, self.spec, self.shuffle_support = view, spec, shuffle_support
        self.max_count = int(view.counts.max())

    def sample(self, batch: int, generator: torch.Generator) -> Episodes:
        v, s = self.view, self.spec
        dev = v.device
        classes = torch.rand(batch, v.n_classes, device=dev, generator=generator).argsort(dim=1)[:, : s.ways]
        keys = torch.rand(batch, s.ways, self.max_count, device=dev, generator=generator)
        slot = torch.arange(self.max_count, device=dev)
        keys = keys.masked_fill(slot >= v.counts[classes].unsqueeze(-1), 2.0)  # never pick past a class's end
        slots = keys.argsort(dim=-1)[..., : s.shots + s.queries]
        qperm = torch.rand(batch, s.ways * s.queries, device=dev, generator=generator).argsort(dim=1)
        return _gather(v, s, classes, slots, qperm, self.shuffle_support)

    def episodes(self, index: FixedEpisodes, start: int, stop: int) -> Episodes:
        dev = self.view.device
        return _gather(
            self.view,
            self.spec,
            index.classes[start:stop].to(dev),
            index.slots[start:stop].to(dev),
            index.qperm[start:stop].to(dev),
            self.shuffle_support,
        )
