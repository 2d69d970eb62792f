"""Train a method on a protocol with a Lightning Trainer, score it on the protocol's fixed test
episodes, and turn the per-episode accuracies into a validated result record."""
from __future__ import annotations

import contextlib
import importlib.metadata as md
import logging
import math
import os
import platform
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from . import paths
from .algorithms import ALGORITHMS, MetaLearner, TaskInfo
from .data.prepare import sha256_file
from .episodes import EpisodeSampler, FixedEpisodes, ImageBatchSampler, fixed_episodes
from .protocols import PROTOCOLS, Protocol
from .results import write_record
from .stats import mean_ci
from .store import EpisodeView, build_view, load_store


class BenchError(RuntimeError):
    """A run that cannot go on; the message says why and what to do."""


class TrainingDiverged(BenchError):
    pass


def resolve_device(name: str = "auto") -> torch.device:
    """The device to run on, with the CUDA numerics every run and measurement here uses (TF32 allowed,
    cuDNN autotuning), so records, verification and `bench perf` agree."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"--device {name}: no CUDA device is visible here. Use --device cpu or auto.")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return dev


class _Stream(IterableDataset):
    """`steps` training batches drawn on the fly, on the view's device, from a seeded generator."""

    def __init__(self, draw: Callable[[torch.Generator], object], steps: int, seed: int, device: torch.device):
        self.draw, self.steps, self.seed, self.device = draw, steps, seed, device

    def __len__(self):
        return self.steps

    def __iter__(self):
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed)
        for _ in range(self.steps):
            yield self.draw(g)


class _FiniteLoss(pl.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise TrainingDiverged(f"the training loss became {loss.item()} at step {trainer.global_step}; "
                                   f"training stopped and no result was written. Lower the learning rate "
                                   f"or check the method for a numerical bug.")


@dataclass
class Prepared:
    """Everything a run needs from the data, built once and shared by all seeds."""
    protocol: Protocol
    train: EpisodeView
    test: EpisodeView
    episodes: FixedEpisodes
    data_fingerprints: dict[str, str] = field(default_factory=dict)


def on_device_if_it_fits(view: EpisodeView, device: torch.device, headroom: float = 0.5) -> EpisodeView:
    """Keep a split's images on the GPU when they take at most `headroom` of its free memory; otherwise
    episodes are gathered on the CPU (pinned) and copied over, slower but never out of memory."""
    if device.type != "cuda":
        return view.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    if view.images.numel() * view.images.element_size() <= headroom * free:
        return view.to(device)
    print(f"note: split {view.label} ({view.images.numel() / 2**30:.1f} GiB) stays in host memory; "
          f"episodes are copied to {device} as they are drawn")
    return EpisodeView(view.label, view.images.pin_memory(), view.offsets, view.counts, view.classes,
                       view.mean, view.std, view.data_fingerprint)


def prepare_run(protocol: Protocol, device: torch.device, n_episodes: int | None = None,
                data_dir: str | None = None, built: dict | None = None) -> Prepared:
    """Views and fixed test episodes for one protocol. `built` shares views between protocols of one
    run (the Caltech-101 -> PACS protocols share their training split), so each is built and moved once."""
    if not protocol.is_single_stage:
        raise BenchError(f"protocol {protocol.name} has {len(protocol.stages)} stages; the harness runs "
                         f"single-stage protocols (few-shot, cross-domain) for now.")
    built = {} if built is None else built
    views = {}
    fps = {}
    for role, split in (("train", protocol.train), ("test", protocol.test)):
        store = load_store(split.dataset, protocol.image_size, protocol.channels, data_dir)
        fps[store.name] = store.fingerprint
        key = (split, protocol.image_size, protocol.channels)
        if key not in built:
            built[key] = on_device_if_it_fits(build_view(store, split), device)
        views[role] = built[key]
    n = n_episodes or protocol.test_episodes
    key = f"{protocol.name}:v{protocol.version}:test"
    eps = fixed_episodes(views["test"], protocol.episode, key, n)
    return Prepared(protocol, views["train"], views["test"], eps, fps)


def method_class(name: str) -> type[MetaLearner]:
    import baselines  # noqa: F401  (registers the built-in methods)
    return ALGORITHMS.get(name)


def build_model(cls: type[MetaLearner], prep: Prepared, hparams: dict) -> MetaLearner:
    p = prep.protocol
    task = TaskInfo(p.episode.ways, p.episode.shots, p.episode.queries, p.image_size, p.channels,
                    prep.train.n_classes)
    return cls(task, **hparams)


def train(model: MetaLearner, prep: Prepared, steps: int, seed: int, device: torch.device,
          progress: bool = True, max_time_s: float | None = None) -> tuple[float, int]:
    """Train for `steps` steps, or until `max_time_s` seconds if that comes first; (seconds, steps done)."""
    if steps <= 0:
        return 0.0, 0
    if model.training_data == "episodes":
        sampler = EpisodeSampler(prep.train, model.train_spec(prep.protocol))
        mb = model.hp["meta_batch"]
        draw = lambda g: sampler.sample(mb, g).to(device)  # noqa: E731
    elif model.training_data == "batches":
        images = ImageBatchSampler(prep.train)
        bs = model.hp["batch_size"]
        draw = lambda g: tuple(t.to(device) for t in images.sample(bs, g))  # noqa: E731
    else:
        raise BenchError(f"{model.name}: training_data must be 'episodes' or 'batches', not {model.training_data!r}")
    place(model, device)
    # the generator lives where the images are, so sampling happens there
    loader = DataLoader(_Stream(draw, steps, seed, prep.train.device), batch_size=None, num_workers=0)
    with _quiet_lightning():
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=1, max_steps=steps,
            logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
            callbacks=[_FiniteLoss()], num_sanity_val_steps=0, deterministic=False,
            max_time={"seconds": max_time_s} if max_time_s else None)
    t0 = time.perf_counter()
    with _quiet_lightning():
        trainer.fit(model, train_dataloaders=loader)
    _sync(device)
    return time.perf_counter() - t0, int(trainer.global_step)


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's start-up banners and advice about features we do not use drown the run's own lines."""
    lg = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = lg.level
    lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            yield
    finally:
        lg.setLevel(level)


def place(model: MetaLearner, device: torch.device) -> MetaLearner:
    """Move a model to the device; on the CPU also to channels-last, which oneDNN convolves 2-3x faster
    (same results to float rounding). On CUDA the layout is left alone: no GPU measurement backs a change."""
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_model(model: MetaLearner, prep: Prepared, device: torch.device, start: int = 0,
                   stop: int | None = None, progress: bool = True) -> tuple[np.ndarray, float]:
    """Per-episode query accuracy on fixed test episodes start..stop-1, and the seconds it took."""
    from tqdm.auto import tqdm

    place(model, device).eval()
    sampler = EpisodeSampler(prep.test, prep.protocol.episode)
    stop = len(prep.episodes) if stop is None else stop
    step = max(1, int(model.hp.get("eval_batch", 50)))
    accs = []
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad(), tqdm(total=stop - start, desc="test episodes", unit="ep", disable=not progress,
                               leave=False) as bar:
        for i in range(start, stop, step):
            ep = sampler.episodes(prep.episodes, i, min(i + step, stop)).to(device)
            logits = model.predict_episodes(ep)
            want = (ep.batch_size, ep.query_y.shape[1], ep.ways)
            if tuple(logits.shape) != want:
                raise BenchError(f"{model.name}.predict returned logits of shape {tuple(logits.shape)}; "
                                 f"the contract is [episodes, queries, ways] = {list(want)}")
            if not torch.isfinite(logits).all():
                raise BenchError(f"{model.name}.predict returned non-finite logits on test episodes {i}..")
            accs.append((logits.argmax(-1) == ep.query_y).float().mean(1).cpu())
            bar.update(ep.batch_size)
    _sync(device)
    return torch.cat(accs).double().numpy(), time.perf_counter() - t0


def environment() -> dict:
    def v(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None
    return {"python": platform.python_version(), "platform": platform.platform(),
            **{p: v(p) for p in ("torch", "pytorch-lightning", "numpy", "datasets", "scipy", "metabench")}}


def git_info() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip()) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    if commit is None and os.environ.get("BENCH_GIT_COMMIT"):
        # a copy of the tree without .git (e.g. shipped to a GPU machine) says which commit it is
        commit = os.environ["BENCH_GIT_COMMIT"]
    return {"git_commit": commit, "git_dirty": dirty}


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device),
                "precision": "fp32 (TF32 matmul and convolution allowed)"}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "precision": "fp32"}


CHECKPOINTS = "checkpoints"  # beside the records, so a results folder carries what `bench verify` needs


def save_checkpoint(model: MetaLearner, path: Path, method: str, protocol: Protocol, seed: int,
                    relative_to: Path | None = None) -> dict:
    """Weights and hyper-parameters of a trained model; the record keeps the path (relative to the
    results folder when inside it) and the sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"method": method, "protocol": protocol.name, "protocol_version": protocol.version, "seed": seed,
                "hparams": model.hp, "state_dict": model.state_dict()}, tmp)
    os.replace(tmp, path)
    shown = path
    if relative_to is not None:
        try:
            shown = path.resolve().relative_to(Path(relative_to).resolve())
        except ValueError:
            pass
    return {"path": shown.as_posix(), "sha256": sha256_file(path)}


def run(method: str, protocol: str, **kwargs) -> tuple[dict, Path | None]:
    """The whole of `bench evaluate` for one protocol: the record and where it was written (None if not)."""
    return run_many(method, [protocol], **kwargs)[0]


def _shared_training_key(p: Protocol) -> tuple:
    return (p.train, p.image_size, p.channels, p.episode, p.train_steps)


def run_many(method: str, protocols: list[str], seeds: tuple[int, ...] | None = None, episodes: int | None = None,
             train_steps: int | None = None, device: str = "auto", hparams: dict | None = None,
             data_dir: str | None = None, results_dir: str | None = None, checkpoint_dir: str | None = None,
             max_train_time: float | None = None, write: bool = True, progress: bool = True,
             method_cls: type[MetaLearner] | None = None, kind: str = "evaluation", source: dict | None = None,
             log: Callable[[str], None] = print) -> list[tuple[dict, Path | None]]:
    """Train once per seed and score on every protocol given; they must share their training set-up
    (e.g. Caltech-101 few-shot and the Caltech-101 -> PACS protocols of the same shots). One record each."""
    protos = [PROTOCOLS.get(p) for p in protocols]
    if not protos:
        raise BenchError("no protocol given")
    first = protos[0]
    for p in protos[1:]:
        if _shared_training_key(p) != _shared_training_key(first):
            raise BenchError(f"protocols {first.name} and {p.name} do not train the same way (training split, "
                             f"image size, episode shape or budget differ); evaluate them in separate runs.")
    cls = method_cls or method_class(method)
    for p in protos:
        why = cls.supports(p)
        if why:
            raise BenchError(f"method {method} cannot run protocol {p.name}: {why}")
    hp = cls.resolve_hparams(hparams or {})
    if cls.training_data == "episodes":
        for p in protos:
            cls.training_episodes(hp, p)  # a bad combination fails here, before any data is loaded
    dev = resolve_device(device)
    seeds = tuple(seeds) if seeds else first.seeds
    steps = first.train_steps if train_steps is None else train_steps
    if len(set(seeds)) != len(seeds):
        raise BenchError(f"--seeds lists a seed twice ({list(seeds)}); each seed is one training run")
    if episodes is not None and episodes < 1:
        raise BenchError(f"--episodes must be at least 1 (got {episodes}); protocols use {first.test_episodes}")
    if steps < 0:
        raise BenchError(f"--train-steps must be 0 or more (got {steps})")
    built: dict = {}
    preps = [prepare_run(p, dev, episodes, data_dir, built) for p in protos]
    base_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    run_ids = [base_id] if len(protos) == 1 else [f"{base_id}.{i}" for i in range(len(protos))]
    res_root = paths.results_dir(results_dir)
    ckpt_root = Path(checkpoint_dir) if checkpoint_dir else res_root / CHECKPOINTS
    names = ", ".join(p.name for p in protos)
    log(f"{method} on {names}: {first.episode}, {len(preps[0].episodes)} fixed test episodes each, "
        f"{steps} training steps{f' or {max_train_time:g}s' if max_train_time else ''}, seeds {list(seeds)}, device {dev}")
    runs: list[list[dict]] = [[] for _ in protos]
    for seed in seeds:
        pl.seed_everything(seed, verbose=False)
        model = build_model(cls, preps[0], hp)
        train_s, done = train(model, preps[0], steps, seed, dev, progress, max_train_time)
        ckpt = save_checkpoint(model, ckpt_root / f"{base_id}-seed{seed}.pt", method, first, seed,
                               relative_to=res_root) if write else None
        for j, prep in enumerate(preps):
            accs, eval_s = evaluate_model(model, prep, dev, progress=progress)
            ci = mean_ci(accs)
            log(f"  seed {seed}, {prep.protocol.name}: {ci}  (train {done} steps in {train_s:.1f}s, eval {eval_s:.1f}s)")
            entry = {"seed": int(seed), "episode_accuracies": [float(a) for a in accs], "mean": ci.mean,
                     "ci95": _none_if_nan(ci.ci95), "n": ci.n, "train_steps": done,
                     "train_budget": {"steps": int(steps), "max_time_s": max_train_time},
                     "train_time_s": round(train_s, 3), "eval_time_s": round(eval_s, 3), "checkpoint": ckpt}
            if len(protos) > 1:
                entry["trained_with"] = [p.name for p in protos]  # one training run served all of these
            runs[j].append(entry)
    out = []
    for run_id, proto, prep, proto_runs in zip(run_ids, protos, preps, runs):
        record = make_record(run_id, proto, prep, method, cls, hp, proto_runs, dev, kind, source)
        s = record["summary"]
        seed_part = f", seed means {100 * s['mean']:.2f} +/- {100 * s['seed_ci95']:.2f}% over {s['n_seeds']} seeds" \
            if s.get("seed_ci95") is not None else ""
        log(f"{method} on {proto.name}: {100 * s['mean']:.2f} +/- {100 * (s['ci95'] or math.nan):.2f}% "
            f"(95% CI over {s['n_episodes']} episodes){seed_part}")
        path = None
        if write:
            path = write_record(res_root, record)
            log(f"wrote {path}")
        out.append((record, path))
    return out


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def make_record(run_id, proto, prep, method, cls, hp, runs, dev, kind, source) -> dict:
    per_episode = np.mean([r["episode_accuracies"] for r in runs], axis=0)
    ep_ci = mean_ci(per_episode)
    seed_means = [r["mean"] for r in runs]
    seed_ci = mean_ci(seed_means)
    method_block = {"name": method, "backbone": hp.get("backbone"), "hparams": hp, "paper": cls.paper}
    if source:
        method_block["source"] = source
    return {
        "schema_version": 1, "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kind": kind,
        "protocol": {**proto.summary(), "test_episodes": len(prep.episodes),
                     "episodes_fingerprint": prep.episodes.fingerprint},
        "method": method_block,
        "seeds": [r["seed"] for r in runs], "runs": runs,
        "summary": {"mean": float(np.mean(seed_means)), "ci95": _none_if_nan(ep_ci.ci95),
                    "n_episodes": len(per_episode), "n_seeds": len(runs),
                    "seed_ci95": _none_if_nan(seed_ci.ci95),
                    "train_time_s": round(sum(r["train_time_s"] for r in runs), 3),
                    "eval_time_s": round(sum(r["eval_time_s"] for r in runs), 3)},
        "device": device_info(dev), "environment": environment(), "code": git_info(),
        "data": prep.data_fingerprints,
    }
