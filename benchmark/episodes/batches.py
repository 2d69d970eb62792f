"""Plain classification batches over a split's classes, for methods that pre-train (Baseline++, SimpleShot)."""

from __future__ import annotations

import torch

from ..store import EpisodeView


class ImageBatchSampler:
    """Plain classification batches over a split's classes, for pre-training baselines."""

    def __init__(self, view: EpisodeView):
        self.view = view
        self.row_class = torch.repeat_interleave(torch.arange(view.n_classes, device=view.device), view.counts)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(self.row_class), (batch,), device=self.view.device, generator=generator)
        return self.view.normalise(self.view.images[rows]), self.row_class[rows]
