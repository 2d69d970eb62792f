"""The search loop both strategies share: episodes from the meta-training and meta-validation splits, a step and
a time budget, a progress bar, and checkpoints it resumes from.

A checkpoint holds the supernet, the strategy's state (architecture weights or controller, optimisers) and
the episode sampler's random state, so a resumed search draws the episodes the uninterrupted one would have;
the time budget counts the seconds of every part of the search together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.errors import BenchError
from ..episodes import Episodes, EpisodeSampler
from ..methods.nas_space import CellChoice, SearchSpace
from ..protocols import EpisodeSpec
from ..store import EpisodeView
from .darts import DARTS_HPARAMS, Darts
from .objective import OBJECTIVE_HPARAMS, Objective, SearchModel
from .rl import ENAS_HPARAMS, Enas

STRATEGIES = ("darts", "rl", "random")
CHECKPOINT_FORMAT = 1


def default_hparams(strategy: str, objective: str) -> dict[str, Any]:
    own = {"darts": DARTS_HPARAMS, "rl": ENAS_HPARAMS, "random": {}}[strategy]
    return {"meta_batch": 4, **own, **OBJECTIVE_HPARAMS[objective]}


def resolve_hparams(strategy: str, objective: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults with `--hparam` overrides, each given the type of its default; unknown names are an error."""
    defaults = default_hparams(strategy, objective)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise BenchError(
            f"search --strategy {strategy} --objective {objective} has no hyper-parameter(s) {', '.join(unknown)}; "
            f"it has: {', '.join(sorted(defaults))}"
        )
    out = dict(defaults)
    for k, v in overrides.items():
        d = defaults[k]
        if isinstance(v, str) and not isinstance(d, str):
            try:
                v = v.lower() in ("1", "true", "yes", "on") if isinstance(d, bool) else type(d)(v)
            except ValueError:
                raise BenchError(f"search hyper-parameter {k}={v!r} is not a {type(d).__name__}") from None
        out[k] = v
    if int(out["meta_batch"]) < 1:
        raise BenchError("meta_batch must be at least 1")
    return out


@dataclass
class SearchConfig:
    strategy: str
    objective: str
    space: SearchSpace
    steps: int
    seed: int = 0
    max_time: float | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    resume: bool = False
    checkpoint_every: float = 60.0  # seconds
    progress: bool = True

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: everything that changes the search's course."""
        return {
            "strategy": self.strategy,
            "objective": self.objective,
            "space": asdict(self.space),
            "steps": self.steps,
            "seed": self.seed,
            "hparams": self.hparams,
        }


@dataclass
class SearchOutcome:
    cell: CellChoice
    summary: dict[str, Any]
    steps: int
    episodes: dict[str, int]  # meta-training and meta-validation episodes seen
    wall_s: float
    stopped_by: str  # "steps" or "time"
    trace: list[dict[str, float]]


def _load_checkpoint(cfg: SearchConfig) -> dict[str, Any] | None:
    path = cfg.checkpoint
    if path is None or not path.exists():
        if cfg.resume:
            raise BenchError(f"--resume: no checkpoint at {path}; start without --resume")
        return None
    if not cfg.resume:
        raise BenchError(
            f"a checkpoint of an earlier search is at {path}: --resume continues it, or delete it to start again"
        )
    blob = torch.load(path, map_location="cpu", weights_only=False)  # our own file: optimiser states, tuples
    if blob.get("format") != CHECKPOINT_FORMAT or blob.get("identity") != cfg.identity():
        raise BenchError(
            f"{path} is the checkpoint of another search (strategy, objective, space, steps, seed or "
            f"hyper-parameters differ); resume with the same options, or delete it"
        )
    return blob


def run_search(
    cfg: SearchConfig,
    train: EpisodeView,
    val: EpisodeView,
    spec: EpisodeSpec,
    channels: int,
    image_size: int,
    device: torch.device,
    val_eps: Callable[[], list[Episodes]],
    log: Callable[[str], None] = print,
) -> SearchOutcome:
    """Search `cfg.space` on episodes of `spec` from `train` (weights) and `val` (architecture); `val_eps()`
    gives the fixed validation episode batches a strategy's derivation may score candidates on."""
    blob = _load_checkpoint(cfg)  # before any work: a mismatched checkpoint is refused at once
    hp = cfg.hparams
    torch.manual_seed(cfg.seed)
    model = SearchModel(cfg.space, channels, image_size, spec.ways).to(device)
    objective = Objective(cfg.objective, model, {k: hp[k] for k in OBJECTIVE_HPARAMS[cfg.objective]})
    init_gen = torch.Generator().manual_seed(cfg.seed)
    strategy: Darts | Enas
    if cfg.strategy == "darts":
        strategy = Darts(cfg.space, objective, hp, cfg.steps, init_gen)
    elif cfg.strategy == "rl":
        strategy = Enas(cfg.space, objective, hp, cfg.steps, cfg.seed)
    else:
        raise BenchError(f"run_search runs darts or rl, not {cfg.strategy!r}")
    gen = torch.Generator(device=train.device).manual_seed(cfg.seed)
    train_s, val_s = EpisodeSampler(train, spec), EpisodeSampler(val, spec)
    done, seen, elapsed, trace = 0, {"train": 0, "val": 0}, 0.0, []
    if blob is not None:
        model.load_state_dict(blob["model"])
        strategy.load_state_dict(blob["strategy"])
        gen.set_state(blob["generator"])
        done, seen, elapsed, trace = blob["done"], blob["episodes"], blob["elapsed"], blob["trace"]
        log(f"resumed {cfg.checkpoint} at step {done} ({elapsed:.0f} s searched)")

    def save() -> None:
        if cfg.checkpoint is None:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "identity": cfg.identity(),
            "model": model.state_dict(),
            "strategy": strategy.state_dict(),
            "generator": gen.get_state(),
            "done": done,
            "episodes": seen,
            "elapsed": elapsed,
            "trace": trace,
        }
        cfg.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = cfg.checkpoint.with_name(cfg.checkpoint.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(cfg.checkpoint)

    mb = int(hp["meta_batch"])
    start, last_save = time.perf_counter() - elapsed, time.perf_counter()
    stopped_by = "steps"
    model.train()
    with tqdm(total=cfg.steps, initial=done, desc=f"{cfg.strategy} search", disable=not cfg.progress) as bar:
        while done < cfg.steps:
            if cfg.max_time is not None and time.perf_counter() - start >= cfg.max_time:
                stopped_by = "time"
                break
            train_ep = train_s.sample(mb, gen).to(device)
            val_ep = val_s.sample(mb, gen).to(device)
            metrics = strategy.step(train_ep, val_ep)
            done += 1
            seen["train"] += mb
            seen["val"] += mb
            trace.append({"step": done, **{k: round(v, 5) for k, v in metrics.items()}})
            bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()})
            bar.update(1)
            elapsed = time.perf_counter() - start
            if time.perf_counter() - last_save >= cfg.checkpoint_every:
                save()
                last_save = time.perf_counter()
    elapsed = time.perf_counter() - start
    save()
    scored = val_eps() if cfg.strategy == "rl" else []  # the supernet normalises with batch statistics only
    cell = strategy.derive(scored)
    seen["val"] += sum(ep.batch_size for ep in scored) * (1 + int(hp.get("candidates", 0)))
    return SearchOutcome(cell, strategy.summary(), done, seen, time.perf_counter() - start, stopped_by, trace)
