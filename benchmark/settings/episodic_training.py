"""The training side of the episodic settings: data views and fixed episodes, the training loop with
model selection on validation episodes, and scoring on the fixed test episodes. Kept apart from the
record side (episodic.py) so that reading records, and the page, never import torch."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from tqdm.auto import tqdm

from ..core.errors import BenchError
from ..episodes import EpisodeSampler, FixedEpisodes, ImageBatchSampler, fixed_episodes
from ..methods import MetaLearner, TaskInfo
from ..protocols import Protocol, SplitSpec
from ..run.config import RunConfig
from ..run.device import on_device_if_it_fits, place, sync
from ..run.training import fit, training_logger
from ..store import EpisodeView, build_view, load_store
from .base import Scored, Trained


@dataclass
class Prepared:
    """Everything a run needs from the data, built once and shared by all seeds."""

    protocol: Protocol
    train: EpisodeView
    test: EpisodeView
    episodes: FixedEpisodes
    data_fingerprints: dict[str, str] = field(default_factory=dict)
    val: EpisodeView | None = None
    val_episodes: FixedEpisodes | None = None


class Views:
    """Builds a protocol's split views on the device, once each: `built` shares them between the protocols of
    one run (the Caltech-101 -> PACS protocols share their training split). `fingerprints` names the
    prepared data every view read."""

    def __init__(self, protocol: Protocol, device: torch.device, data_dir: str | None, built: dict | None = None):
        self.protocol, self.device, self.data_dir = protocol, device, data_dir
        self.built = {} if built is None else built
        self.fingerprints: dict[str, str] = {}

    def __call__(self, split: SplitSpec) -> EpisodeView:
        p = self.protocol
        store = load_store(split.dataset, p.image_size, p.channels, self.data_dir)
        self.fingerprints[store.name] = store.fingerprint
        key = (split, p.image_size, p.channels)
        if key not in self.built:
            self.built[key] = on_device_if_it_fits(build_view(store, split), self.device)
        return self.built[key]


def episodes_key(protocol: Protocol, split: str) -> str:
    return f"{protocol.name}:v{protocol.version}:{split}"


def prepare_run(
    protocol: Protocol,
    device: torch.device,
    n_episodes: int | None = None,
    data_dir: str | None = None,
    built: dict | None = None,
    val_episodes: int = 0,
) -> Prepared:
    """Views and fixed test (and validation) episodes for one protocol. `built` shares views between
    protocols of one run (the Caltech-101 -> PACS protocols share their training split), so each is
    built and moved once."""
    if not protocol.is_single_stage:
        raise BenchError(
            f"protocol {protocol.name} has {len(protocol.stages)} stages; the episodic settings "
            f"run single-stage protocols."
        )
    view = Views(protocol, device, data_dir, built)
    fps = view.fingerprints

    train, test = view(protocol.train), view(protocol.test)
    spec = protocol.episode_spec
    eps = fixed_episodes(test, spec, episodes_key(protocol, "test"), n_episodes or protocol.test_episodes)
    val = val_eps = None
    if val_episodes > 0 and protocol.val is not None:
        val = view(protocol.val)
        val_eps = fixed_episodes(val, protocol.episode_spec, episodes_key(protocol, "val"), val_episodes)
    return Prepared(protocol, train, test, eps, fps, val, val_eps)


# Input values (images x channels x pixels) scored in one pass on a CPU. A method's eval_batch suits Omniglot;
# at 84 px the same 50 episodes of Caltech-101 put about 15 GB of Conv-4 activations in memory and the run was
# killed, 30 minutes in. A GPU keeps the method's eval_batch: a faster pass is worth the memory there.
CPU_PASS_VALUES = 16_000_000


def episodes_per_pass(eval_batch: int, protocol: Protocol, device: torch.device) -> int:
    """Test episodes per forward pass: the method's eval_batch, capped on a CPU at CPU_PASS_VALUES of input.
    Episodes are scored independently, so the cap changes memory and speed; a score only where float rounding
    in a batched kernel breaks an exact tie the other way."""
    step = max(1, eval_batch)
    if device.type != "cpu":
        return step
    spec = protocol.episode_spec
    values = spec.ways * (spec.shots + spec.queries) * protocol.channels * protocol.image_size**2
    return max(1, min(step, CPU_PASS_VALUES // max(1, values)))


def evaluate_model(
    model: MetaLearner,
    view: EpisodeView,
    index: FixedEpisodes,
    protocol: Protocol,
    device: torch.device,
    start: int = 0,
    stop: int | None = None,
    progress: bool = True,
    desc: str = "test episodes",
) -> tuple[np.ndarray, float]:
    """Per-episode query accuracy on fixed episodes start..stop-1, and the seconds it took."""
    place(model, device).eval()
    sampler = EpisodeSampler(view, protocol.episode_spec, model.shuffled_support)
    stop = len(index) if stop is None else stop
    step = episodes_per_pass(int(model.hp.get("eval_batch", 50)), protocol, device)
    accs = []
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad(), tqdm(total=stop - start, desc=desc, unit="ep", disable=not progress, leave=False) as bar:
        for i in range(start, stop, step):
            ep = sampler.episodes(index, i, min(i + step, stop)).to(device)
            logits = model.predict_episodes(ep)
            want = (ep.batch_size, ep.query_y.shape[1], ep.ways)
            if tuple(logits.shape) != want:
                raise BenchError(
                    f"{model.name}.predict returned logits of shape {tuple(logits.shape)}; "
                    f"the contract is [episodes, queries, ways] = {list(want)}"
                )
            if not torch.isfinite(logits).all():
                raise BenchError(f"{model.name}.predict returned non-finite logits on {desc} {i}..")
            accs.append((logits.argmax(-1) == ep.query_y).float().mean(1).cpu())
            bar.update(ep.batch_size)
    sync(device)
    return torch.cat(accs).double().numpy(), time.perf_counter() - t0


class Checkpoints(pl.Callback):
    """Scores the model on the validation episodes every `every` steps and, under a time budget, every
    `every_s` seconds too (a time-capped run may stop long before its step budget), keeping the best."""

    def __init__(self, every: int, check, every_s: float | None = None):
        self.every, self.check, self.every_s = every, check, every_s
        self.t0 = self.next_s = 0.0

    def on_train_start(self, trainer, module):
        self.t0 = time.perf_counter()
        self.next_s = self.every_s or 0.0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        elapsed = time.perf_counter() - self.t0
        due_by_time = self.every_s is not None and elapsed >= self.next_s
        if step > 0 and (step % self.every == 0 or due_by_time):
            self.check(module, step)
            if self.every_s is not None:
                self.next_s = time.perf_counter() - self.t0 + self.every_s


def training_draw(model: MetaLearner, data: Prepared, device: torch.device) -> Callable[[torch.Generator], object]:
    """Training batches from the training split: episodes, or image batches for pre-training methods."""
    if model.training_data == "episodes":
        sampler = EpisodeSampler(data.train, model.train_spec(data.protocol), model.shuffled_support)
        mb = model.hp["meta_batch"]
        return lambda g: sampler.sample(mb, g).to(device)
    if model.training_data == "batches":
        images = ImageBatchSampler(data.train)
        bs = model.hp["batch_size"]
        return lambda g: tuple(t.to(device) for t in images.sample(bs, g))
    raise BenchError(f"{model.name}: training_data must be 'episodes' or 'batches', not {model.training_data!r}")


def train(
    model: MetaLearner,
    data: Prepared,
    cfg: RunConfig,
    steps: int,
    seed: int,
    device: torch.device,
    draw: Callable[[torch.Generator], object] | None = None,
) -> Trained:
    """Train with model selection on the validation episodes; batches from `draw(generator)` when given (a
    setting with batches of its own shape), else episodes or image batches of the training split."""
    remote = getattr(model, "remote_train", None)
    if remote is not None:  # a sandboxed submission (benchmark.submissions.sandbox) trains in its own process
        return remote(data, cfg, steps, seed, device)
    draw = draw or training_draw(model, data, device)
    val, val_eps, val_split = data.val, data.val_episodes, data.protocol.val
    select = val is not None and val_eps is not None and val_split is not None and steps > 0
    checked: list[tuple[int, float]] = []
    best: dict[str, Any] = {}
    val_seconds = [0.0]

    def check(module, step):
        assert val is not None and val_eps is not None
        if step <= getattr(module, "selectable_after", 0):  # what it scores is not trained yet (meta-kd's teacher)
            return
        accs, secs = evaluate_model(
            module, val, val_eps, data.protocol, device, progress=False, desc="validation episodes"
        )
        module.train()
        val_seconds[0] += secs
        acc = float(accs.mean())
        checked.append((step, acc))
        if not best or acc >= best["acc"]:  # ties go to the later, longer-trained model
            best.update(
                acc=acc, step=step, state=copy.deepcopy({k: v.detach().cpu() for k, v in module.state_dict().items()})
            )

    every_s = cfg.max_train_time / (cfg.val_checks + 1) if cfg.max_train_time else None
    callbacks = [Checkpoints(max(1, steps // max(1, cfg.val_checks)), check, every_s)] if select else []
    logger, log = training_logger(cfg, model.name, data.protocol.name, seed)
    options = {"devices": cfg.devices, "logger": logger}
    seconds, done = fit(
        model, draw, steps, seed, device, data.train.device, cfg.progress, cfg.max_train_time, callbacks, **options
    )
    extra = {**({"log": log} if log else {}), **({"train_devices": cfg.devices} if cfg.devices > 1 else {})}
    if not select or val_split is None or val_eps is None:
        return Trained(seconds, done, extra={**extra, **method_extra(model)})
    if not checked or checked[-1][0] != done:
        check(model, done)
    model.load_state_dict(best["state"])
    selection = {
        "rule": "best-val",
        "split": val_split.label,
        "episodes": len(val_eps),
        "checked_steps": [s for s, _ in checked],
        "val_accuracies": [a for _, a in checked],
        "chosen_step": best["step"],
        "val_accuracy": best["acc"],
        "val_time_s": round(val_seconds[0], 3),
    }
    return Trained(seconds, done, selection, {**extra, **method_extra(model)})


def method_extra(model: MetaLearner) -> dict[str, Any]:
    """What a method reports about its own training (an optional `record_extra()` -> dict), read after model
    selection so that it describes the model scored; under one key, so it cannot overwrite the harness's."""
    report = getattr(model, "record_extra", None)
    return {"method_extra": report()} if callable(report) else {}


def score(model: MetaLearner, data: Prepared, device: torch.device, progress: bool = True) -> Scored:
    accs, secs = evaluate_model(model, data.test, data.episodes, data.protocol, device, progress=progress)
    return Scored(accs, secs)


def sample_episodes(prep: Prepared, indices: list[int]) -> FixedEpisodes:
    """Test episode i generated on its own (start=i, count=1), for each i, stacked into one index.
    fixed_episodes is a pure function of (key, index); checking each against the full index's slice
    makes that a fact for the record being verified rather than an assumption."""
    key = episodes_key(prep.protocol, "test")
    parts = [fixed_episodes(prep.test, prep.protocol.episode_spec, key, 1, start=i) for i in indices]
    full = prep.episodes
    for i, one in zip(indices, parts):
        pairs = ((one.classes[0], full.classes[i]), (one.slots[0], full.slots[i]), (one.qperm[0], full.qperm[i]))
        if not all(torch.equal(a, b) for a, b in pairs):
            raise BenchError(f"episode {i} generated alone differs from the batched index; a bug in benchmark/episodes")
    return FixedEpisodes(
        torch.cat([p.classes for p in parts]),
        torch.cat([p.slots for p in parts]),
        torch.cat([p.qperm for p in parts]),
        f"sample of {full.fingerprint}",
    )


def rescore(model: MetaLearner, prep: Prepared, indices: list[int], device: torch.device) -> np.ndarray:
    accs, _ = evaluate_model(model, prep.test, sample_episodes(prep, indices), prep.protocol, device, progress=False)
    return accs


def build_model(cls: type[MetaLearner], data: Prepared, hp: dict[str, Any]) -> MetaLearner:
    p = data.protocol
    e = p.episode_spec
    task = TaskInfo(e.ways, e.shots, e.queries, p.image_size, p.channels, data.train.n_classes)
    return cls(task, **hp)
