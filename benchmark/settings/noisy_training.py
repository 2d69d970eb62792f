"""The training side of the noisy-label setting: the training, meta and test views with the protocol's corrupted
training labels, a training loop that hands methods `NoisyBatch`es (never the true training labels, the
corruption or the test set), the training images' weights under the final model, and image-by-image scoring."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.errors import BenchError, DataError
from ..methods import DomainLearner, MetaLearner, NoisyBatch, TaskInfo, batch_statistics
from ..protocols import Protocol, corrupt, noise_key
from ..run.config import RunConfig
from ..run.device import sync
from ..run.training import fit
from ..store import EpisodeView, load_store
from ..store.views import class_positions, view_rows
from .base import Scored, Trained
from .domains_training import augment, correct, fingerprint, labels_of
from .episodic_training import Views
from .noisy_rules import SELECTION_RULE, weight_summary

WEIGHTS_SEED = 0  # the fixed batches the training images' weights are measured in: the same for every run


@dataclass
class NoisyData:
    protocol: Protocol
    train: EpisodeView  # the training images, grouped by their true class
    meta: EpisodeView  # the clean meta set, with true labels
    test: EpisodeView  # what is scored
    labels: torch.Tensor  # [len(train)] the training labels as given to methods (some corrupted)
    corrupted: np.ndarray  # [len(train)] which of them were corrupted: the harness's, never a method's
    classes: tuple[str, ...]
    labels_fingerprint: str
    images_fingerprint: str
    data_fingerprints: dict[str, str] = field(default_factory=dict)


def prepare(protocol: Protocol, device: torch.device, cfg: RunConfig, built: dict | None = None) -> NoisyData:
    # --select auto and final both mean the setting's rule here: the final model (see noisy.py)
    if cfg.episodes is not None:
        raise BenchError(f"{protocol.name} scores every test image; --episodes does not apply to it")
    assert protocol.val is not None and protocol.noise is not None
    view = Views(protocol, device, cfg.data_dir, built)
    train, meta, test = view(protocol.train), view(protocol.val), view(protocol.test)
    for v in (meta, test):
        if v.classes != train.classes:
            raise DataError(
                f"{protocol.name}: split {v.label} has {v.n_classes} classes, the training split {train.n_classes}; "
                f"every class needs training, meta and test images (is the prepared dataset complete?)"
            )
    store = load_store(protocol.train.dataset, protocol.image_size, protocol.channels, cfg.data_dir)
    rows = view_rows(store, protocol.train)
    if len(rows) != len(train.images):
        raise DataError(f"{protocol.name}: the training view and its rows disagree; a bug in benchmark/store")
    images = [f"{c}/{p}" for c, p in zip(store.columns["label"][rows], class_positions(store)[rows])]
    true = labels_of(train).cpu().numpy()
    given = corrupt(protocol.noise, noise_key(protocol), true, images, train.n_classes)
    h = hashlib.sha256(f"{fingerprint(train)}|{noise_key(protocol)}".encode())
    h.update(given.astype(np.int64).tobytes())
    return NoisyData(
        protocol,
        train,
        meta,
        test,
        torch.from_numpy(given).to(train.device),
        given != true,
        train.classes,
        h.hexdigest(),
        fingerprint(test),
        view.fingerprints,
    )


def build_model(cls: type[MetaLearner], data: NoisyData, hp: dict[str, Any]) -> MetaLearner:
    p = data.protocol
    n = len(data.classes)
    return cls(TaskInfo(n, 0, 0, p.image_size, p.channels, n), **hp)


def meta_rows(view: EpisodeView, per_class: int, g: torch.Generator) -> torch.Tensor:
    """Rows of a clean meta batch: `per_class` images of every class, each drawn uniformly from its class (with
    replacement) by `g`, on the view's device."""
    counts, offsets = view.counts.to(g.device), view.offsets.to(g.device)
    pick = torch.rand(len(counts), per_class, generator=g, device=g.device) * counts[:, None]
    return (offsets[:, None] + pick.long()).flatten().to(view.device)


def pools(model: MetaLearner) -> bool:
    """Whether the method takes the meta images as ordinary training data (erm) rather than as a clean batch."""
    return getattr(model, "noisy_labels", None) == "pooled"


def train(model: MetaLearner, data: NoisyData, cfg: RunConfig, steps: int, seed: int, device: torch.device) -> Trained:
    if getattr(model, "remote_train", None) is not None:
        raise BenchError("submissions do not run noisy-label protocols yet")
    bs = int(model.hp["batch_size"])
    images, labels = data.train.images, data.labels
    meta_labels = labels_of(data.meta)
    if pools(model):
        images, labels = torch.cat([images, data.meta.images]), torch.cat([labels, meta_labels.to(labels.device)])
    norm = data.train.normalise

    def draw(g: torch.Generator) -> NoisyBatch:
        idx = torch.randint(len(labels), (bs,), generator=g, device=images.device)
        batch = NoisyBatch(norm(augment(images[idx], g)).to(device), labels[idx].to(device), idx.to(device))
        if not pools(model):
            m = meta_rows(data.meta, int(model.hp["meta_per_class"]), g)
            batch.meta_x = norm(augment(data.meta.images[m], g)).to(device)
            batch.meta_y = meta_labels[m].to(device)
        return batch

    seconds, done = fit(model, draw, steps, seed, device, images.device, cfg.progress, cfg.max_train_time)
    return Trained(seconds, done, {"rule": SELECTION_RULE}, {"label_weights": label_weights(model, data, device)})


def label_weights(model: MetaLearner, data: NoisyData, device: torch.device) -> dict:
    """The weight the final model's update gives each training image (`example_weights`; 1 for a method without
    it) relative to its batch's mean weight, so that methods compare on one scale (uniform weighting is 1; a
    method's common scale does not matter under Adam), in fixed batches of the training batch size with a fixed
    clean meta batch each, unaugmented, summarised per weight bin for corrupted and clean labels."""
    t0 = time.perf_counter()
    n, bs = len(data.labels), int(model.hp["batch_size"])
    weigh = getattr(model, "example_weights", None)
    if weigh is None:
        return weight_summary(np.ones(n), data.corrupted, time.perf_counter() - t0, bs)
    g = torch.Generator().manual_seed(WEIGHTS_SEED)
    order = torch.randperm(n, generator=g)
    meta_labels = labels_of(data.meta)
    out = np.zeros(n)
    model.to(device).train()
    with batch_statistics(model):
        for part in torch.tensor_split(order, max(1, round(n / bs))):
            idx = part.to(data.train.device)
            x = data.train.normalise(data.train.images[idx]).to(device)
            batch = NoisyBatch(x, data.labels[idx].to(device), idx.to(device))
            if not pools(model):
                m = meta_rows(data.meta, int(model.hp.get("meta_per_class", 1)), g)  # on the CPU: the same anywhere
                batch.meta_x = data.meta.normalise(data.meta.images[m]).to(device)
                batch.meta_y = meta_labels[m].to(device)
            w = weigh(batch).detach()
            if w.shape != (len(part),) or not torch.isfinite(w).all() or (w < 0).any():
                raise BenchError(
                    f"{model.name}.example_weights gave {tuple(w.shape)} (want [{len(part)}], finite, >= 0)"
                )
            mean = w.double().mean()
            out[part.numpy()] = (w.double() / mean if mean > 0 else w.double()).cpu().numpy()
    model.eval()
    return weight_summary(out, data.corrupted, time.perf_counter() - t0, bs)


def score(model: MetaLearner, data: NoisyData, device: torch.device, progress: bool = True) -> Scored:
    sync(device)
    t0 = time.perf_counter()
    assert isinstance(model, DomainLearner)
    units = correct(model, data.test, device, progress, desc="test images")
    sync(device)
    return Scored(units, time.perf_counter() - t0)
