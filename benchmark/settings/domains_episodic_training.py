"""The training side of few-shot under domain shift (domains_episodic.py): views of the pooled training split
and of each source rotation, fixed test episodes applied to the target and to the reference view, training as
in the few-shot setting (episodes grouped by domain for domain learners), and scoring of both."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.errors import BenchError, DataError
from ..episodes import EpisodeSampler, FixedEpisodes, fixed_episodes
from ..methods import MetaLearner
from ..protocols import Protocol
from ..records import mean_ci
from ..run.config import RunConfig
from ..store import EpisodeView, rotation_views
from . import episodic_training as episodic
from .base import Scored, Trained
from .episodic import _none_if_nan


@dataclass
class ShiftedData(episodic.Prepared):
    """`test` and `episodes` are the target's (what is ranked); `reference` is the same images at the reference
    rotation, answered on the same episode index."""

    reference: EpisodeView | None = None
    reference_fingerprint: str = ""  # of the index drawn on the reference view: the same integers, its classes
    domains: list[EpisodeView] = field(default_factory=list)  # the training split, one view per source rotation


def base_name(cls: str) -> str:
    """A class name without its rotation suffix: "Alphabet/character01@rot075" -> "Alphabet/character01"."""
    return cls.rsplit("@rot", 1)[0]


def same_episodes(target: EpisodeView, reference: EpisodeView, a: FixedEpisodes, b: FixedEpisodes) -> None:
    """The reference answers the target's episodes: the same characters in the same order with the same image
    counts, and the same index drawn on both (the index is a pure function of the key and the counts)."""
    if [base_name(c) for c in target.classes] != [base_name(c) for c in reference.classes] or not torch.equal(
        target.counts.cpu(), reference.counts.cpu()
    ):
        raise DataError(f"{reference.label} does not hold the classes and images of {target.label}")
    if not all(torch.equal(x, y) for x, y in ((a.classes, b.classes), (a.slots, b.slots), (a.qperm, b.qperm))):
        raise BenchError("the reference and target episode indices differ; a bug in benchmark/episodes")


build_model = episodic.build_model  # an episodic learner, built as on any episodic protocol


def prepare(
    protocol: Protocol,
    device: torch.device,
    n_episodes: int | None = None,
    data_dir: str | None = None,
    built: dict | None = None,
    val_episodes: int = 0,
) -> ShiftedData:
    view = episodic.Views(protocol, device, data_dir, built)
    fps = view.fingerprints

    reference_split, target_split = protocol.stages[0].test
    train, target, reference = view(protocol.train), view(target_split), view(reference_split)
    spec, key = protocol.episode_spec, episodic.episodes_key(protocol, "test")
    n = n_episodes or protocol.test_episodes
    episodes = fixed_episodes(target, spec, key, n)
    on_reference = fixed_episodes(reference, spec, key, n)
    same_episodes(target, reference, episodes, on_reference)
    val = val_eps = None
    if val_episodes > 0 and protocol.val is not None:
        val = view(protocol.val)
        val_eps = fixed_episodes(val, spec, episodic.episodes_key(protocol, "val"), val_episodes)
    domains = rotation_views(train, protocol.train.rotations)
    return ShiftedData(
        protocol, train, target, episodes, fps, val, val_eps, reference, on_reference.fingerprint, domains
    )


def train(
    model: MetaLearner, data: ShiftedData, cfg: RunConfig, steps: int, seed: int, device: torch.device
) -> Trained:
    """As in the few-shot setting; a domain learner gets a list of `meta_batch` episodes per source rotation."""
    if model.training_data != "domains":
        return episodic.train(model, data, cfg, steps, seed, device)
    samplers = [EpisodeSampler(v, model.train_spec(data.protocol), model.shuffled_support) for v in data.domains]
    mb = model.hp["meta_batch"]
    return episodic.train(
        model, data, cfg, steps, seed, device, draw=lambda g: [s.sample(mb, g).to(device) for s in samplers]
    )


def score(model: MetaLearner, data: ShiftedData, device: torch.device, progress: bool = True) -> Scored:
    assert data.reference is not None
    p = data.protocol
    target, seconds = episodic.evaluate_model(
        model, data.test, data.episodes, p, device, progress=progress, desc="target episodes"
    )
    reference, ref_seconds = episodic.evaluate_model(
        model, data.reference, data.episodes, p, device, progress=progress, desc="reference episodes"
    )
    ci = mean_ci(reference)
    block = {
        "split": data.reference.label,
        "episode_accuracies": [float(a) for a in reference],
        "mean": ci.mean,
        "ci95": _none_if_nan(ci.ci95),
        "n": ci.n,
        "eval_time_s": round(ref_seconds, 3),
    }
    return Scored(target, seconds + ref_seconds, {"reference": block})


def rescore(model: MetaLearner, data: ShiftedData, indices: list[int], device: torch.device) -> np.ndarray:
    """Units 0..n-1 are the target episodes, n..2n-1 the same episodes at the reference rotation; each
    episode is generated on its own (episodic_training.sample_episodes)."""
    assert data.reference is not None
    n, idx = len(data.episodes), np.asarray(indices)
    if len(idx) and not 0 <= idx.min() <= idx.max() < 2 * n:
        raise BenchError(
            f"units {indices} are not all in 0..{2 * n - 1} (the target's {n} episodes, then the reference's)"
        )
    out = np.empty(len(idx))
    for view, mask in ((data.test, idx < n), (data.reference, idx >= n)):
        if mask.any():
            sample = episodic.sample_episodes(data, [int(i) % n for i in idx[mask]])
            out[mask], _ = episodic.evaluate_model(model, view, sample, data.protocol, device, progress=False)
    return out
