"""What a sweep asks for, from the command line or a small TOML/YAML file, and the trials it expands to.

A sweep is methods x protocols x configurations x seeds. A configuration is the fixed `hparams` plus one
point of a grid (every combination of `grid`'s values) or one random draw from the method's SEARCH_SPACE
(`trials` draws per method and protocol, each from a numpy generator seeded by a hash of the sweep's seed,
the method, the protocol and the draw's number, as DomainBed seeds its hyper-parameters). Each (configuration,
seed) is a trial: one ordinary run, identified by the sha256 of its full configuration.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..core import paths
from ..core.errors import BenchError
from ..methods import sample_space
from ..protocols import PROTOCOLS
from ..protocols import added as protocol_files
from ..records import to_jsonable
from ..run import RunConfig
from ..settings import plan

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SWEEPS_ENV = "BENCH_SWEEPS_DIR"


@dataclass(frozen=True)
class SweepSpec:
    methods: tuple[str, ...] = ("protonet",)
    protocols: tuple[str, ...] = ("omniglot-5w1s",)
    seeds: tuple[int, ...] | None = None  # None: each protocol's seeds
    hparams: Mapping[str, Any] = field(default_factory=dict)  # fixed in every trial
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # every combination of these values
    trials: int = 0  # random search: configurations drawn per (method, protocol) from its SEARCH_SPACE
    seed: int = 0  # the sweep's seed: which configurations the random search draws
    name: str | None = None  # the sweep's folder under `sweeps_dir`; None: from the methods and protocols
    train_steps: int | None = None
    episodes: int | None = None
    max_train_time: float | None = None
    val_episodes: int = 100
    val_checks: int = 5
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: a quarter of a GPU where the cluster has GPUs, else none
    logger: str | None = None
    data_dir: str | None = None
    results_dir: str | None = None
    sweeps_dir: str | None = None  # None: $BENCH_SWEEPS_DIR, else sweeps/ beside the results folder
    log_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("methods", "protocols"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "hparams", dict(self.hparams))
        object.__setattr__(self, "grid", {k: tuple(v) for k, v in self.grid.items()})
        self.check()

    def check(self) -> None:
        if not self.methods or not self.protocols:
            raise BenchError("a sweep needs at least one method and one protocol (--method, --protocol)")
        for what, names in (("--method", self.methods), ("--protocol", self.protocols)):
            if len(set(names)) != len(names):
                raise BenchError(f"{what} names something twice ({list(names)})")
        if self.grid and self.trials:
            raise BenchError("choose a grid (--grid) or a random search (--trials N), not both")
        if self.trials < 0:
            raise BenchError(f"--trials must be 0 or more (got {self.trials})")
        empty = [k for k, v in self.grid.items() if not v]
        if empty:
            raise BenchError(f"--grid {empty[0]} has no values; give them as KEY=V1,V2,...")
        both = sorted(set(self.grid) & set(self.hparams))
        if both:
            raise BenchError(f"{', '.join(both)} is both fixed (--hparam) and searched (--grid); choose one")
        if self.cpus_per_trial <= 0 or (self.gpus_per_trial is not None and self.gpus_per_trial < 0):
            raise BenchError("--cpus-per-trial must be positive and --gpus-per-trial 0 or more")
        if self.name is not None and not _SAFE(self.name):
            raise BenchError(f"--name {self.name!r}: use letters, digits, '.', '_', '+' and '-' only")

    @property
    def folder(self) -> Path:
        """Where the trials' records live: an ordinary results folder of its own."""
        if self.sweeps_dir:
            root = Path(self.sweeps_dir)
        elif os.environ.get(SWEEPS_ENV):
            root = Path(os.environ[SWEEPS_ENV])
        else:
            root = paths.results_dir(self.results_dir).resolve().parent / "sweeps"
        return (root / self.sweep_name).resolve()

    @property
    def sweep_name(self) -> str:
        if self.name:
            return self.name
        readable = f"{'+'.join(self.methods)}_{'+'.join(self.protocols)}"
        if len(readable) <= 60 and _SAFE(readable):
            return readable
        return "sweep-" + _sha(self.methods, self.protocols)[:10]


def _SAFE(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "._+-" for c in name) and not name.startswith(".")


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(parts), sort_keys=True).encode()).hexdigest()


SPEC_KEYS = {f.name for f in fields(SweepSpec)} - {"data_dir", "results_dir", "sweeps_dir", "log_dir"}
ALIASES = {"method": "methods", "protocol": "protocols"}


def read_spec_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a sweep file (TOML, or YAML with the same keys), checked for unknown keys."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise BenchError(f"sweep file {p}: cannot be read ({e.strerror or e})") from None
    try:
        if p.suffix.lower() == ".toml":
            raw = tomllib.loads(text)
        elif p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text) or {}
        else:
            raise BenchError(f"sweep file {p}: name a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise BenchError(f"sweep file {p}: {e}") from None
    except Exception as e:  # yaml's errors share no base class worth importing yaml for
        raise BenchError(f"sweep file {p}: {type(e).__name__}: {e}") from None
    if not isinstance(raw, dict):
        raise BenchError(f"sweep file {p}: expected a table of settings at the top")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = ALIASES.get(key, key)
        if key not in SPEC_KEYS:
            raise BenchError(f"sweep file {p}: unknown setting {key!r}; known: {', '.join(sorted(SPEC_KEYS))}")
        if key in ("methods", "protocols", "seeds") and not isinstance(value, list):
            value = [value]
        if key == "grid" and not (isinstance(value, dict) and all(isinstance(v, list) for v in value.values())):
            raise BenchError(f"sweep file {p}: grid is a table of lists of values ([grid] lr = [1e-3, 3e-4])")
        out[key] = value
    return out


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: picklable, so it travels to a Ray worker as it is."""

    key: str  # sha256 of the full configuration, seed included: the trial's identity
    config: str  # sha256 of the configuration without the seed: what the trials of one configuration share
    index: int  # the configuration's number within its (method, protocol), from 0
    method: str
    protocol: str  # the registered name
    protocol_arg: str  # what resolves it in a worker: the name, or a protocol file's absolute path
    setting: str
    seed: int
    hparams: dict[str, Any]  # the overrides the run is given (fixed and searched)
    searched: dict[str, Any]  # the searched part of them (what the page shows beside the selection)

    @property
    def run_id(self) -> str:
        return f"trial-{self.key[:16]}"

    def record_path(self, folder: Path) -> Path:
        return Path(folder) / self.setting / self.protocol / self.method / f"{self.run_id}.json"

    def label(self) -> str:
        return f"{self.method} on {self.protocol}, configuration {self.index}, seed {self.seed}"


def configurations(spec: SweepSpec, cls, method: str, protocol: str) -> list[tuple[dict, dict]]:
    """(overrides, searched part) of each configuration of `method` on `protocol`."""
    fixed = dict(spec.hparams)
    if spec.grid:
        keys = sorted(spec.grid)
        points = [dict(zip(keys, values)) for values in itertools.product(*(spec.grid[k] for k in keys))]
        return [({**fixed, **p}, p) for p in points]
    if spec.trials:
        space = {k: d for k, d in cls.SEARCH_SPACE.items() if k not in fixed}
        if not space:
            raise BenchError(
                f"method {method} declares no search space (SEARCH_SPACE) beyond what --hparam fixes, so --trials "
                f"has nothing to draw; search it with --grid KEY=V1,V2 instead"
            )
        out = []
        for j in range(spec.trials):
            rng = np.random.default_rng(int(_sha("draw", spec.seed, method, protocol, j)[:16], 16))
            drawn = sample_space(space, rng)
            out.append(({**fixed, **drawn}, drawn))
        return out
    return [(fixed, {})]


def expand(spec: SweepSpec, data_dir: str | None = None) -> list[Trial]:
    """Every trial of the sweep, each configuration checked (method, protocol, hyper-parameters) before any
    data is touched. Configurations that resolve to the same hyper-parameters are run once."""
    resolved_args = {}
    for arg in spec.protocols:
        (name,) = protocol_files.resolve([arg], data_dir)
        resolved_args[name] = str(Path(arg).resolve()) if Path(arg).suffix.lower() in protocol_files.SUFFIXES else arg
    out: list[Trial] = []
    for method in spec.methods:
        for name, arg in resolved_args.items():
            protocol = PROTOCOLS.get(name)
            seen: set[str] = set()
            setting, _, cls, _, _, _ = plan(run_config(spec, method, name, spec.hparams))
            made = configurations(spec, cls, method, name)
            if len(made) > 1 and protocol.val is None:
                raise BenchError(
                    f"protocol {name} defines no validation split, so a sweep cannot choose among "
                    f"{len(made)} configurations there (the test episodes never choose); sweep it with one"
                )
            for overrides, searched in made:
                cfg = run_config(spec, method, name, overrides)
                _, _, _, hp, _, steps = plan(cfg)  # a bad value fails here, naming the hyper-parameter
                identity = {
                    "method": method,
                    "protocol": [name, protocol.version],
                    "hparams": hp,
                    "train_steps": steps,
                    "max_train_time": spec.max_train_time,
                    "episodes": spec.episodes,
                    "selection": ["auto", spec.val_episodes, spec.val_checks],
                }
                config = _sha(identity)
                if config in seen:
                    continue
                seen.add(config)
                for seed in spec.seeds or protocol.seeds:
                    out.append(
                        Trial(
                            key=_sha(identity, int(seed)),
                            config=config,
                            index=len(seen) - 1,
                            method=method,
                            protocol=name,
                            protocol_arg=arg,
                            setting=setting.name,
                            seed=int(seed),
                            hparams=to_jsonable(overrides),
                            searched=to_jsonable(searched),
                        )
                    )
    return out


def run_config(spec: SweepSpec, method: str, protocol: str, hparams: Mapping[str, Any], **more: Any) -> RunConfig:
    """The RunConfig of one configuration (of one trial, with `more`: seeds, folders, the record's sweep part)."""
    return RunConfig(
        method,
        (protocol,),
        episodes=spec.episodes,
        train_steps=spec.train_steps,
        max_train_time=spec.max_train_time,
        hparams=dict(hparams),
        val_episodes=spec.val_episodes,
        val_checks=spec.val_checks,
        logger=spec.logger,
        **more,
    )
