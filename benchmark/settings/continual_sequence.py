"""The training side of the meta-training sequence: any few-shot method meta-trains on one group of classes
after another (the episodic training loop, stage by stage, on the same model), and after each stage every
group's fixed test episodes are scored: a row of the accuracy matrix. GEM's b is a randomly initialised model's
accuracy on each group (the model as built, before any training)."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..episodes import FixedEpisodes, fixed_episodes
from ..methods import MetaLearner, TaskInfo
from ..protocols import Protocol
from ..run.config import RunConfig
from ..store import EpisodeView
from .base import Scored, Trained
from .episodic_training import Prepared, Views, evaluate_model
from .episodic_training import train as train_stage


@dataclass
class SequenceData:
    protocol: Protocol
    train: list[EpisodeView]  # one per stage (group)
    test: list[EpisodeView]  # one per group: its held-out classes
    episodes: list[FixedEpisodes]  # one per group
    fingerprint: str
    data_fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(f"group {i + 1}" for i in range(len(self.test)))

    @property
    def episodes_per_task(self) -> int:
        return len(self.episodes[0])


# the rows of R a model's sequence learned, for `score` (which the run loop calls next with the same model)
_MATRICES: weakref.WeakKeyDictionary[MetaLearner, dict[str, Any]] = weakref.WeakKeyDictionary()


def prepare(protocol: Protocol, device: torch.device, cfg: RunConfig, built: dict | None = None) -> SequenceData:
    view = Views(protocol, device, cfg.data_dir, built)
    train = [view(stage.train) for stage in protocol.stages]
    test = [view(split) for split in protocol.stages[0].test]
    count = cfg.episodes or protocol.test_episodes
    spec = protocol.episode_spec
    episodes = [
        fixed_episodes(v, spec, f"{protocol.name}:v{protocol.version}:group{j}", count) for j, v in enumerate(test)
    ]
    h = hashlib.sha256("|".join(e.fingerprint for e in episodes).encode())
    return SequenceData(protocol, train, test, episodes, h.hexdigest(), view.fingerprints)


def build_model(cls: type[MetaLearner], data: SequenceData, hp: dict[str, Any]) -> MetaLearner:
    p = data.protocol
    e = p.episode_spec
    return cls(TaskInfo(e.ways, e.shots, e.queries, p.image_size, p.channels, data.train[0].n_classes), **hp)


def row(model: MetaLearner, data: SequenceData, device: torch.device) -> list[np.ndarray]:
    """Every group's per-episode accuracies."""
    return [
        evaluate_model(model, view, eps, data.protocol, device, progress=False)[0]
        for view, eps in zip(data.test, data.episodes)
    ]


def train(
    model: MetaLearner, data: SequenceData, cfg: RunConfig, steps: int, seed: int, device: torch.device
) -> Trained:
    """`steps` meta-training steps per stage (a time budget is shared equally by the stages)."""
    stages = len(data.train)
    per_stage = dataclasses.replace(cfg, max_train_time=cfg.max_train_time / stages if cfg.max_train_time else None)
    b = [float(a.mean()) for a in row(model, data, device)]
    rows, seconds, done = [], 0.0, []
    for i, view in enumerate(data.train):
        prep = Prepared(data.protocol, view, data.test[0], data.episodes[0])  # no validation: the final model
        model.train()
        trained = train_stage(model, prep, per_stage, steps, seed * 1000 + i, device)
        seconds += trained.seconds
        done.append(trained.steps)
        rows.append([float(a.mean()) for a in row(model, data, device)])
    _MATRICES[model] = {"R": rows, "b": b}
    return Trained(seconds, sum(done), {"rule": "final"}, {"stage_steps": done})


def score(model: MetaLearner, data: SequenceData, device: torch.device, progress: bool = True) -> Scored:
    t0 = time.perf_counter()
    final = row(model, data, device)
    matrix = _MATRICES.get(model)
    if matrix is None:
        raise RuntimeError("the meta-training sequence scores a model it trained (train() first)")
    rows = [*matrix["R"][:-1], [float(a.mean()) for a in final]]
    extra = {"R": rows, "b": matrix["b"], "episodes_per_task": data.episodes_per_task}
    return Scored(np.concatenate(final), time.perf_counter() - t0, extra)


def rescore(model: MetaLearner, data: SequenceData, indices: list[int], device: torch.device) -> np.ndarray:
    return np.concatenate(row(model, data, device))[np.asarray(indices, dtype=np.int64)]
