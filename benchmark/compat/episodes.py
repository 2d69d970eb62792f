"""A protocol's fixed test episodes in torchmeta's batch format, in their fixed order, for outside code.

They are the harness's episodes exactly: the same store, view, `fixed_episodes` key and fingerprint as
`bench evaluate` (settings/episodic_training.py), the support class-major and the queries in the harness's
shuffled order, labels 0..ways-1. Only the pixels follow the compatible datasets (float32 in [0, 1],
Omniglot inverted), so a model trained on `benchmark.compat.torchmeta` data sees the same kind of images here.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..episodes import EpisodeSampler, FixedEpisodes, fixed_episodes
from ..protocols import PROTOCOLS, EpisodeSpec, Protocol
from ..run.config import MAX_TEST_EPISODES
from ..settings import Episodic, setting_of
from ..settings.episodic_training import episodes_key
from ..store import EpisodeView, build_view, load_store
from .splits import INVERTED, CompatError, ensure_data, unit_view

Batch = OrderedDict[str, tuple[torch.Tensor, torch.Tensor]]


def episode_spec(protocol: Protocol) -> EpisodeSpec:
    """The protocol's episode shape; an error for protocols that are not scored on episodes."""
    if protocol.episode is None or not isinstance(setting_of(protocol), Episodic) or not protocol.is_single_stage:
        raise CompatError(
            f"protocol {protocol.name} ({protocol.setting}) is not scored on one set of fixed episodes (it classifies "
            f"images, or scores a reference beside its target); protocol_episodes and external records are for the "
            f"few-shot and cross-domain protocols (`bench list`)"
        )
    return protocol.episode


@dataclass
class ProtocolEpisodes:
    """Iterating gives batches {"train": (support_x, support_y), "test": (query_x, query_y)} of `batch_size`
    episodes: support [B, ways*shots, C, H, W] float32, queries [B, ways*queries, ...], labels int64."""

    protocol: Protocol
    spec: EpisodeSpec
    index: FixedEpisodes
    view: EpisodeView
    invert: bool
    batch_size: int
    data_fingerprints: dict[str, str] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def fingerprint(self) -> str:
        """The episodes fingerprint a record of these episodes carries (and `external_record` checks)."""
        return self.index.fingerprint

    @property
    def episodes(self) -> FixedEpisodes:  # what the settings' record hooks read
        return self.index

    @property
    def n_episodes(self) -> int:
        return len(self.index)

    @property
    def query_labels(self) -> torch.Tensor:
        """[episodes, ways*queries] int64: the labels the queries are scored against. The harness lays the
        queries out class-major and permutes them by `qperm`, so query j of an episode has label qperm // queries."""
        return self.index.qperm // self.spec.queries

    def __len__(self) -> int:
        return -(-self.n_episodes // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        sampler = EpisodeSampler(self.view, self.spec)
        for start in range(0, self.n_episodes, self.batch_size):
            ep = sampler.episodes(self.index, start, min(start + self.batch_size, self.n_episodes))
            sx, qx = (self._pixels(x) for x in (ep.support_x, ep.query_x))
            yield OrderedDict(
                train=(sx.to(self.device), ep.support_y.to(self.device)),
                test=(qx.to(self.device), ep.query_y.to(self.device)),
            )

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 - x if self.invert else x


def protocol_episodes(
    protocol: str,
    folder: str | os.PathLike | None = None,
    batch_size: int = 1,
    episodes: int | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
) -> ProtocolEpisodes:
    """The fixed test episodes of `protocol` (e.g. "omniglot-5w1s"): the first `episodes` of them (default: the
    protocol's count, 600), `batch_size` per batch, read from the prepared data in `folder`."""
    proto = PROTOCOLS.get(protocol)
    spec = episode_spec(proto)
    n = proto.test_episodes if episodes is None else int(episodes)
    if not 1 <= n <= MAX_TEST_EPISODES:
        raise CompatError(f"episodes must be between 1 and {MAX_TEST_EPISODES:,} (got {n:,}); protocols use 600")
    if batch_size < 1:
        raise CompatError(f"batch_size must be at least 1 (got {batch_size})")
    root = ensure_data(proto.datasets, folder, download)
    fps: dict[str, str] = {}
    for split in (proto.train, proto.test):  # the datasets a harness record names, train first as it does
        store = load_store(split.dataset, proto.image_size, proto.channels, root)
        fps[store.name] = store.fingerprint
    test = build_view(load_store(proto.test.dataset, proto.image_size, proto.channels, root), proto.test)
    index = fixed_episodes(test, spec, episodes_key(proto, "test"), n)
    return ProtocolEpisodes(
        proto, spec, index, unit_view(test), proto.test.dataset in INVERTED, batch_size, fps, torch.device(device)
    )
