"""`bench search`: a protocol's meta-training and meta-validation splits -> a search -> a genotype file, sized to
a reference backbone's parameter count, with the search's seed and cost. The test split is never read."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import paths
from ..core.errors import BenchError
from ..data import ensure_prepared
from ..episodes import EpisodeSampler, fixed_episodes
from ..methods.genotype import (
    GENOTYPE_DIR,
    NAME_PATTERN,
    Genotype,
    is_versioned_name,
    match_channels,
    next_name,
    reference_params,
    write_genotype,
)
from ..methods.nas_space import random_choice, space_named
from ..protocols import PROTOCOLS, Protocol
from ..run import device_info, git_info, resolve_device
from ..settings.episodic_training import Views, episodes_key
from .objective import OBJECTIVES
from .search import STRATEGIES, SearchConfig, resolve_hparams, run_search

# the protocol a dataset is searched on when none is named: the goal's (omniglot-20w1s, caltech101-5w1s)
DATASET_PROTOCOLS = {"omniglot": "omniglot-20w1s", "caltech101": "caltech101-5w1s"}
MATCH = ("conv4", "resnet12", "none")
DERIVE_EPISODES = 100  # fixed validation episodes an RL derivation scores its candidate cells on


@dataclass
class SearchRequest:
    strategy: str
    objective: str = "protonet"
    dataset: str | None = None
    protocol: str | None = None
    steps: int = 1000
    max_time: float | None = None
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    out: str | None = None
    space: str = "darts-fewshot-v1"
    width: int | None = None  # the supernet's channels while searching (default: the space's)
    cells: int | None = None
    match: str = "conv4"
    resume: bool = False
    checkpoint: str | None = None
    progress: bool = True


def _protocol(req: SearchRequest) -> Protocol:
    if req.protocol is None and req.dataset is None:
        raise BenchError("name --dataset (omniglot, caltech101) or --protocol")
    name = req.protocol or DATASET_PROTOCOLS.get(str(req.dataset))
    if name is None:
        raise BenchError(f"--dataset {req.dataset}: choose {', '.join(DATASET_PROTOCOLS)}, or name a --protocol")
    proto = PROTOCOLS.get(name)
    if req.dataset is not None and req.dataset not in proto.datasets:
        raise BenchError(f"--protocol {proto.name} uses {', '.join(proto.datasets)}, not --dataset {req.dataset}")
    if proto.setting not in ("few-shot", "cross-domain") or not proto.is_single_stage:
        raise BenchError(f"--protocol {proto.name}: a search runs on a few-shot protocol's episodes")
    if proto.val is None:
        raise BenchError(
            f"--protocol {proto.name} has no meta-validation split; the architecture is fit on one, so choose a "
            f"protocol that defines it"
        )
    return proto


def check_request(req: SearchRequest) -> tuple[Protocol, dict[str, Any], str, Path, Path]:
    """Every option checked before any data is read: (protocol, hyper-parameters, genotype name, output file,
    checkpoint)."""
    if req.strategy not in STRATEGIES:
        raise BenchError(f"--strategy {req.strategy}: choose one of {', '.join(STRATEGIES)}")
    if req.objective not in OBJECTIVES:
        raise BenchError(f"--objective {req.objective}: choose one of {', '.join(OBJECTIVES)}")
    if req.match not in MATCH:
        raise BenchError(f"--match {req.match}: choose one of {', '.join(MATCH)}")
    if req.steps < 1 and req.strategy != "random":
        raise BenchError("--steps must be at least 1")
    if req.max_time is not None and req.max_time <= 0:
        raise BenchError("--max-time must be positive")
    proto = _protocol(req)
    space_named(req.space)
    hp = resolve_hparams(req.strategy, req.objective, req.hparams)
    dataset = req.dataset or proto.datasets[0]
    name = req.name or next_name(f"{req.strategy}-{dataset}")
    if not is_versioned_name(name):
        raise BenchError(f"--name {name!r} must be {NAME_PATTERN}")
    out = Path(req.out) if req.out else GENOTYPE_DIR / f"{name}.json"
    if out.name != f"{name}.json":
        raise BenchError(f"--out {out}: a genotype file is named after the genotype ({name}.json)")
    if out.exists():
        raise BenchError(f"{out} exists; a genotype is never overwritten: choose another --name (…-v2)")
    ckpt = Path(req.checkpoint) if req.checkpoint else paths.data_dir(req.data_dir) / "nas" / f"{name}.ckpt.pt"
    if req.resume and not ckpt.exists():
        raise BenchError(f"--resume: no checkpoint at {ckpt}; start without --resume")
    return proto, hp, name, out, ckpt


def search(req: SearchRequest, log: Callable[[str], None] = print) -> tuple[Genotype, Path]:
    proto, hp, name, out, ckpt = check_request(req)
    space = space_named(req.space)
    space = dataclasses.replace(space, channels=req.width or space.channels, cells=req.cells or space.cells)
    dev = resolve_device(req.device)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if req.strategy == "random":
        cell = random_choice(space, torch.Generator().manual_seed(req.seed))
        info = {
            "wall_s": round(time.perf_counter() - t0, 1),
            "steps": 0,
            "episodes": {"train": 0, "val": 0},
            "stopped_by": "steps",
            "summary": {},
        }
        fingerprints: dict[str, str] = {}
    else:
        ensure_prepared(proto.datasets, req.data_dir, log=log)
        views = Views(proto, dev, req.data_dir)
        assert proto.val is not None  # _protocol refused a protocol without one
        train, val = views(proto.train), views(proto.val)
        spec = proto.episode_spec
        mb = int(hp["meta_batch"])

        def derive_episodes():
            index = fixed_episodes(val, spec, episodes_key(proto, "val"), DERIVE_EPISODES)
            sampler = EpisodeSampler(val, spec)
            return [sampler.episodes(index, i, min(i + mb, len(index))).to(dev) for i in range(0, len(index), mb)]

        cfg = SearchConfig(
            req.strategy,
            req.objective,
            space,
            req.steps,
            req.seed,
            req.max_time,
            hp,
            ckpt,
            req.resume,
            progress=req.progress,
        )
        log(
            f"searching {space.name} ({space.cells} cells of {space.channels} channels) with {req.strategy} on "
            f"{proto.name} ({req.objective} objective), {req.steps} steps"
            f"{f' or {req.max_time:g} s' if req.max_time else ''}; checkpoints: {ckpt}"
        )
        outcome = run_search(cfg, train, val, spec, proto.channels, proto.image_size, dev, derive_episodes, log)
        cell = outcome.cell
        info = {
            "wall_s": round(outcome.wall_s, 1),  # every part of a resumed search
            "steps": outcome.steps,
            "episodes": outcome.episodes,
            "stopped_by": outcome.stopped_by,
            "summary": outcome.summary,
        }
        fingerprints = dict(views.fingerprints)
    found = Genotype(name, space.name, space.ops, cell, space.cells, space.channels, space.stem)
    refs = reference_params(proto.channels, proto.image_size)
    size_at = {"in_channels": proto.channels, "image_size": proto.image_size}
    if req.match != "none":
        channels = match_channels(found, refs[req.match], proto.channels, proto.image_size)
        found = found.with_channels(channels, {})
    count = sum(p.numel() for p in found.build(proto.channels, proto.image_size).parameters())
    params = {**size_at, "count": count, "matched_to": req.match, "references": refs}
    search_info = {
        "strategy": req.strategy,
        "objective": req.objective,
        "protocol": proto.name,
        "protocol_version": proto.version,
        "seed": req.seed,
        **{k: info[k] for k in ("steps", "episodes", "stopped_by", "wall_s")},
        "device": device_info(dev),
        "budget": {"steps": req.steps, "max_time_s": req.max_time},
        "space": dataclasses.asdict(space),
        "hparams": hp if req.strategy != "random" else {},
        "result": info["summary"],
        "data": fingerprints,
        "code": git_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    genotype = dataclasses.replace(found, params=params, search=search_info)
    path = write_genotype(genotype, out)
    if info["stopped_by"] == "steps":
        ckpt.unlink(missing_ok=True)  # complete: the genotype file replaces it (one stopped by time can be extended)
    return genotype, path
