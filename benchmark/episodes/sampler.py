"""N-way K-shot Q-query episodes, drawn by index from an `EpisodeView`, in batches, on its device.

Training episodes come from a torch generator on the training device (fast, seeded per run); test
episodes are gathered from a `FixedEpisodes` index (fixed.py). Query order is shuffled within each
episode so a method cannot read labels off positions.
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
    """A batch of B episodes. Support is class-major: label j's K shots are positions j*K .. j*K+K-1."""

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


def _gather(
    view: EpisodeView, spec: EpisodeSpec, classes: torch.Tensor, slots: torch.Tensor, qperm: torch.Tensor
) -> Episodes:
    """classes [B, N] view class ids; slots [B, N, K+Q] within-class positions; qperm [B, N*Q]."""
    b, n = classes.shape
    k, q = spec.shots, spec.queries
    rows = view.offsets[classes].unsqueeze(-1) + slots  # [B, N, K+Q]
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
        classes = torch.rand(batch, v.n_classes, device=dev, generator=generator).argsort(dim=1)[:, : s.ways]
        keys = torch.rand(batch, s.ways, self.max_count, device=dev, generator=generator)
        slot = torch.arange(self.max_count, device=dev)
        keys = keys.masked_fill(slot >= v.counts[classes].unsqueeze(-1), 2.0)  # never pick past a class's end
        slots = keys.argsort(dim=-1)[..., : s.shots + s.queries]
        qperm = torch.rand(batch, s.ways * s.queries, device=dev, generator=generator).argsort(dim=1)
        return _gather(v, s, classes, slots, qperm)

    def episodes(self, index: FixedEpisodes, start: int, stop: int) -> Episodes:
        dev = self.view.device
        return _gather(
            self.view,
            self.spec,
            index.classes[start:stop].to(dev),
            index.slots[start:stop].to(dev),
            index.qperm[start:stop].to(dev),
        )
