"""Tensor views -> episodes: seeded training episodes, fixed test episodes, plain class batches."""

from .batches import ImageBatchSampler
from .checks import check_fillable
from .fixed import FixedEpisodes, fixed_episodes
from .sampler import Episodes, EpisodeSampler, support_order

__all__ = [
    "ImageBatchSampler",
    "check_fillable",
    "FixedEpisodes",
    "fixed_episodes",
    "EpisodeSampler",
    "Episodes",
    "support_order",
]
