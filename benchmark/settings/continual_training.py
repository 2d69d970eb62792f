"""The training side of the continual stream and task-sequence protocols: views of the pre-training classes
and of the continual ones, pre-training (plain batches or meta-training trajectories), and learning each stream
or task sequence from the pre-trained weights, scored as it goes."""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import BenchError
from ..episodes import ImageBatchSampler
from ..methods import MetaLearner, TaskInfo
from ..methods.continual import ContinualLearner, Trajectory
from ..protocols import Protocol, stream_order
from ..run.config import RunConfig
from ..run.device import place, sync
from ..run.training import fit
from ..store import EpisodeView
from .base import Scored, Trained
from .domains_training import fingerprint as view_fingerprint
from .episodic_training import Views


@dataclass
class ContinualData:
    protocol: Protocol
    pretrain: EpisodeView  # the first stage's classes (background alphabets)
    learn: list[EpisodeView]  # stream: one view of the learned images; tasks: one per task
    test: list[EpisodeView]  # the held-out images, laid out like `learn`
    fingerprint: str
    task_names: tuple[str, ...] = ()
    orders: list[np.ndarray] = field(default_factory=list)  # stream: class positions in the order learned
    checkpoints: tuple[int, ...] = ()
    classes_per_stream: int = 0
    classes_limit: int | None = None
    data_fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def task_classes(self) -> list[int]:
        return [v.n_classes for v in self.learn]

    @property
    def ways(self) -> int:
        return self.classes_per_stream if self.orders else sum(self.task_classes)


def _check_config(protocol: Protocol, cfg: RunConfig) -> None:
    if cfg.select not in ("auto", "final"):
        raise BenchError(f"--select {cfg.select} is not offered for {protocol.name}")


def _same_classes(a: EpisodeView, b: EpisodeView, protocol: Protocol) -> None:
    if a.classes != b.classes or bool((b.counts < 1).any()):
        raise BenchError(f"{protocol.name}: the learned and held-out images must cover the same classes")


def prepare_stream(
    protocol: Protocol, device: torch.device, cfg: RunConfig, built: dict | None = None
) -> ContinualData:
    _check_config(protocol, cfg)
    spec = protocol.continual
    assert spec is not None and spec.kind == "stream"
    view = Views(protocol, device, cfg.data_dir, built)
    learn_split, test_split = protocol.stages[1].test
    learn, test = view(learn_split), view(test_split)
    _same_classes(learn, test, protocol)
    full = spec.checkpoints[-1]
    length = min(full, cfg.max_classes) if cfg.max_classes else full
    if length > learn.n_classes:
        raise BenchError(
            f"{protocol.name}: a stream of {length} classes needs more than the {learn.n_classes} there are"
        )
    checkpoints = tuple(c for c in spec.checkpoints if c < length) + (length,)
    orders = [stream_order(protocol, i, learn.classes)[:length] for i in range(cfg.episodes or spec.streams)]
    h = hashlib.sha256(f"{view_fingerprint(learn)}|{view_fingerprint(test)}|{checkpoints}".encode())
    for order in orders:
        h.update(np.asarray(order, dtype=np.int64).tobytes())
    return ContinualData(
        protocol,
        view(protocol.stages[0].train),
        [learn],
        [test],
        h.hexdigest(),
        orders=orders,
        checkpoints=checkpoints,
        classes_per_stream=length,
        classes_limit=length if length != full else None,
        data_fingerprints=view.fingerprints,
    )


def prepare_tasks(protocol: Protocol, device: torch.device, cfg: RunConfig, built: dict | None = None) -> ContinualData:
    _check_config(protocol, cfg)
    if cfg.episodes is not None:
        raise BenchError(f"{protocol.name} scores every task's held-out images; --episodes does not apply to it")
    view = Views(protocol, device, cfg.data_dir, built)
    learn = [view(stage.train) for stage in protocol.stages[1:]]
    test = [view(stage.test[0]) for stage in protocol.stages[1:]]
    for a, b in zip(learn, test):
        _same_classes(a, b, protocol)
    h = hashlib.sha256()
    for v in (*learn, *test):
        h.update(view_fingerprint(v).encode())
    names = tuple("+".join(dict(s.train.where).get("alphabet", (s.train.label,))) for s in protocol.stages[1:])
    return ContinualData(
        protocol, view(protocol.stages[0].train), learn, test, h.hexdigest(), task_names=names,
        data_fingerprints=view.fingerprints,
    )  # fmt: skip


def build_model(cls: type[MetaLearner], data: ContinualData, hp: dict[str, Any]) -> MetaLearner:
    p = data.protocol
    return cls(TaskInfo(data.ways, 0, 0, p.image_size, p.channels, data.pretrain.n_classes), **hp)


def trajectory_draw(model: ContinualLearner, view: EpisodeView, device: torch.device):
    """OML/ANML's meta-training samples: `traj_classes` random classes, `traj_images` of their images (drawn
    without replacement within a class while it has images left), and `remember` random images of all classes."""
    hp = model.hp
    k, n_img, remember = int(hp["traj_classes"]), int(hp["traj_images"]), int(hp["remember"])
    rows = ImageBatchSampler(view)

    def draw(g: torch.Generator) -> Trajectory:
        classes = torch.randperm(view.n_classes, generator=g, device=view.device)[:k]
        per = [n_img // k + (1 if i < n_img % k else 0) for i in range(k)]
        xs, ys = [], []
        for c, n in zip(classes.tolist(), per):
            count = int(view.counts[c])
            pick = torch.randperm(count, generator=g, device=view.device)
            pick = pick.repeat(-(-n // count))[:n]
            xs.append(view.images[view.offsets[c] + pick])
            ys.append(torch.full((n,), c, device=view.device))
        inner_x, inner_y = view.normalise(torch.cat(xs)), torch.cat(ys)
        rx, ry = rows.sample(remember, g) if remember else (inner_x[:0], inner_y[:0])
        traj = Trajectory(inner_x, inner_y, torch.cat([inner_x, rx]), torch.cat([inner_y, ry]))
        return traj.to(device)

    return draw


def pretrain(
    model: MetaLearner, data: ContinualData, cfg: RunConfig, steps: int, seed: int, device: torch.device
) -> Trained:
    if getattr(model, "remote_train", None) is not None:
        raise BenchError("submissions do not run continual protocols yet")
    assert isinstance(model, ContinualLearner)
    with torch.no_grad():
        model.stream_seed.fill_(int(seed))
    if model.pretraining == "trajectories":
        draw = trajectory_draw(model, data.pretrain, device)
    elif model.pretraining == "batches":
        rows, bs = ImageBatchSampler(data.pretrain), int(model.hp["batch_size"])
        draw = lambda g: tuple(t.to(device) for t in rows.sample(bs, g))  # noqa: E731
    else:
        raise BenchError(f"{model.name}: pretraining must be 'batches' or 'trajectories', not {model.pretraining!r}")
    seconds, done = fit(model, draw, steps, seed, device, data.pretrain.device, cfg.progress, cfg.max_train_time)
    return Trained(seconds, done, {"rule": "final"})


def _classify(
    model: ContinualLearner,
    view: EpisodeView,
    classes: list[int],
    device: torch.device,
    lo: int,
    hi: int,
    ids: list[int],
) -> np.ndarray:
    """Correctness of every image of the view's `classes` (positions), labelled `ids`, among output units lo..hi-1."""
    step = max(1, int(model.hp.get("eval_batch", 256)))
    rows = torch.cat([view.offsets[c] + torch.arange(int(view.counts[c]), device=view.device) for c in classes])
    labels = torch.cat([torch.full((int(view.counts[c]),), i, device=view.device) for c, i in zip(classes, ids)])
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), step):
            logits = model.classify(view.normalise(view.images[rows[i : i + step]]).to(device))
            if logits.ndim != 2 or logits.shape[1] != model.task.ways or not torch.isfinite(logits).all():
                raise BenchError(
                    f"{model.name}.classify returned {tuple(logits.shape)} (non-finite or not [n, {model.task.ways}])"
                )
            out.append((logits[:, lo:hi].argmax(-1) + lo == labels[i : i + step].to(device)).cpu())
    return torch.cat(out).double().numpy()


def _stream_seed(model: ContinualLearner, index: int) -> int:
    digest = hashlib.sha256(f"{int(model.stream_seed)}|{index}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def _begin(model: ContinualLearner, pretrained: dict, index: int, device: torch.device) -> None:
    model.load_state_dict(pretrained)
    place(model, device).eval()
    torch.manual_seed(_stream_seed(model, index))
    model.begin_continual()


def score_streams(
    model: MetaLearner,
    data: ContinualData,
    device: torch.device,
    progress: bool = True,
    streams: list[int] | None = None,
) -> Scored:
    """Learn each stream from the pre-trained weights; test accuracy and retention at every checkpoint."""
    assert isinstance(model, ContinualLearner)
    spec = data.protocol.continual
    assert spec is not None
    learn, test = data.learn[0], data.test[0]
    which = list(range(len(data.orders))) if streams is None else list(streams)
    pretrained = copy.deepcopy(model.state_dict())
    images = sum(int(learn.counts[c]) for c in data.orders[0]) * spec.passes
    sync(device)
    t0 = time.perf_counter()
    tests, kept = [], []
    with tqdm(total=images * len(which), desc="streams", unit="img", disable=not progress, leave=False) as bar:
        for s in which:
            _begin(model, pretrained, s, device)
            order = data.orders[s].tolist()
            row_test, row_kept = [], []
            for k, c in enumerate(order):
                x = learn.normalise(learn.images[learn.offsets[c] : learn.offsets[c] + learn.counts[c]]).to(device)
                y = torch.full((len(x),), k, device=device)
                for _ in range(spec.passes):
                    for i in range(0, len(x), spec.batch):
                        model.observe(x[i : i + spec.batch], y[i : i + spec.batch], k + 1)
                bar.update(len(x) * spec.passes)
                if k + 1 in data.checkpoints:
                    model.consolidate()
                    ids = list(range(k + 1))
                    row_test.append(float(_classify(model, test, order[: k + 1], device, 0, k + 1, ids).mean()))
                    row_kept.append(float(_classify(model, learn, order[: k + 1], device, 0, k + 1, ids).mean()))
            tests.append(row_test)
            kept.append(row_kept)
    model.load_state_dict(pretrained)
    sync(device)
    units = np.asarray([row[-1] for row in tests], dtype=np.float64)
    extra = {"checkpoints": list(data.checkpoints), "test_accuracy": tests, "retention": kept}
    return Scored(units, time.perf_counter() - t0, extra)


def _accuracies(
    model: ContinualLearner, data: ContinualData, device: torch.device, upto: int, incremental_seen: int | None
) -> list[float]:
    """Each task's held-out accuracy: within its own classes (task-incremental, or for b), or among the first
    `incremental_seen` classes (class-incremental)."""
    place(model, device).eval()
    out, offset = [], 0
    for view in data.test[:upto]:
        n = view.n_classes
        lo, hi = (offset, offset + n) if incremental_seen is None else (0, incremental_seen)
        ids = list(range(offset, offset + n))
        out.append(float(_classify(model, view, list(range(n)), device, lo, hi, ids).mean()) if hi > lo else 0.0)
        offset += n
    return out


def randomly_initialised(model: ContinualLearner) -> ContinualLearner:
    """GEM's reference for forward transfer: the same network with fresh random weights (seeded from the run's
    seed, so a replay draws the same ones)."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(_stream_seed(model, -1))
    for m in fresh.modules():
        reset = getattr(m, "reset_parameters", None)
        if m is not fresh and callable(reset):
            reset()
    return fresh


def score_tasks(model: MetaLearner, data: ContinualData, device: torch.device, progress: bool = True) -> Scored:
    """Learn the tasks in order from the pre-trained weights, each in the protocol's batches and passes over its
    images in a fixed order; after each, every task's accuracy (a row of R)."""
    assert isinstance(model, ContinualLearner)
    spec = data.protocol.continual
    assert spec is not None
    class_il = spec.incremental == "class"
    pretrained = copy.deepcopy(model.state_dict())
    sync(device)
    t0 = time.perf_counter()
    b = _accuracies(randomly_initialised(model), data, device, len(data.test), None)
    _begin(model, pretrained, 0, device)
    rows, seen = [], 0
    total = sum(len(v.images) for v in data.learn) * spec.passes
    with tqdm(total=total, desc="tasks", unit="img", disable=not progress, leave=False) as bar:
        for t, view in enumerate(data.learn):
            labels = torch.repeat_interleave(torch.arange(view.n_classes, device=view.device), view.counts) + seen
            seen += view.n_classes
            digest = hashlib.sha256(f"{data.protocol.name}|v{data.protocol.version}|task{t}".encode()).digest()
            order = torch.from_numpy(
                np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(len(labels))
            )
            for _ in range(spec.passes):
                for i in range(0, len(order), spec.batch):
                    idx = order[i : i + spec.batch].to(view.device)
                    model.observe(view.normalise(view.images[idx]).to(device), labels[idx].to(device), seen)
                    bar.update(len(idx))
            model.consolidate()
            rows.append(_accuracies(model, data, device, len(data.test), seen if class_il else None))
    model.load_state_dict(pretrained)
    sync(device)
    return Scored(np.asarray(rows[-1], dtype=np.float64), time.perf_counter() - t0, {"R": rows, "b": b})
