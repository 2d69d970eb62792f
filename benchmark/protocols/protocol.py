"""Protocols: frozen, versioned values registered by name.

A protocol says which data a method may train on and which fixed episodes it is tested on. The
value is general enough for the settings to come: a `Stage` trains on one split and is evaluated
on several, so cross-domain is one stage tested on another dataset, domain generalisation is one
stage trained on some domains and tested on another, and a continual protocol is a sequence of
stages evaluated after each. Any change to a registered protocol's meaning gets a new version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..core.registry import Registry

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # settings and families become folder names and page tabs


@dataclass(frozen=True)
class SplitSpec:
    """Which images and classes of a prepared dataset form one split."""

    dataset: str
    class_split: str | None = None  # a file in benchmark/splits, e.g. "omniglot-vinyals-v1"
    part: str | None = None  # its part: "train", "val" or "test"
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()  # row filters, e.g. (("domain", ("sketch",)),)
    rotations: tuple[int, ...] = (0,)  # degrees counter-clockwise; each (class, rotation) is a class of its own
    classes: tuple[str, ...] = ()  # the split's classes given inline (protocol files), instead of a file
    # (name, fraction, part): a fixed, versioned share of the images of every stratum (class and `where`
    # values) held out by a hash of (name, stratum, position); part "out" is the share, "in" the rest
    holdout: tuple[str, float, str] | None = None
    # (name, fraction, part): the same, over classes: a fixed share of the split's classes, ranked by a hash of
    # (name, class), held out whole ("out") or kept ("in"); new classes from the same alphabets, for example
    class_holdout: tuple[str, float, str] | None = None
    # (name, start, stop): by count rather than share, the images of every stratum whose rank in the same hash
    # order as `holdout`'s (of name, stratum, position) is in [start, stop); disjoint ranges, disjoint images
    ranks: tuple[str, int, int] | None = None

    def __post_init__(self):
        bad = [r for r in self.rotations if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < 360]
        if bad or not self.rotations or len(set(self.rotations)) != len(self.rotations):
            raise ValueError(
                f"split {self.dataset}: rotations {list(self.rotations)} must be distinct whole degrees in [0, 360)"
                + (f" ({bad} are not)" if bad else "")
            )
        for what, hold in (("holdout", self.holdout), ("class_holdout", self.class_holdout)):
            if hold is None:
                continue
            name, fraction, part = hold
            if not (0 < fraction < 1) or part not in ("in", "out") or not SLUG.match(name):
                raise ValueError(
                    f"split {self.dataset}: {what} {hold!r} must be (a slug, a fraction in (0, 1), 'in' or 'out')"
                )
        if self.ranks is not None:
            name, start, stop = self.ranks
            if not SLUG.match(name) or not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop):
                raise ValueError(
                    f"split {self.dataset}: ranks {self.ranks!r} must be (a slug, start, stop) with 0 <= start < stop"
                )

    @property
    def label(self) -> str:
        bits = [self.dataset]
        if self.class_split:
            bits.append(f"{self.class_split}:{self.part}")
        if self.classes:  # named by count and digest: a changed class list is a different split
            digest = hashlib.sha256("\n".join(self.classes).encode()).hexdigest()
            bits.append(f"{self.part or 'classes'}:{len(self.classes)}@{digest[:12]}")
        bits += [f"{col}={'+'.join(vals)}" for col, vals in self.where]
        if self.rotations != (0,):
            bits.append("rot" + "+".join(str(r) for r in self.rotations))
        if self.holdout is not None:
            name, fraction, part = self.holdout
            bits.append(f"{name}@{fraction:g}:{part}")
        if self.class_holdout is not None:
            name, fraction, part = self.class_holdout
            bits.append(f"{name}@{fraction:g}:classes-{part}")
        if self.ranks is not None:
            name, start, stop = self.ranks
            bits.append(f"{name}#{start}-{stop}")
        return "/".join(bits)


@dataclass(frozen=True)
class EpisodeSpec:
    ways: int
    shots: int
    queries: int = 15

    def __str__(self) -> str:
        return f"{self.ways}-way {self.shots}-shot ({self.queries} queries per class)"


@dataclass(frozen=True)
class ContinualSpec:
    """How a continual protocol runs after its first stage (pre-training on `stages[0]`), by `kind`:

    - "stream": `stages[1]` holds the stream's images (`test[0]`, learned) and the held-out images of the
      same classes (`test[1]`, scored); each of `streams` fixed orders of its classes is learned one class at
      a time, `batch` images per update, and scored after each count of classes in `checkpoints`;
    - "tasks": `stages[1:]` are the tasks in their fixed order, each training on its `train` split and scored
      on its `test[0]`; `incremental` is "task" (scored within the task's own classes) or "class" (among every
      class seen so far);
    - "meta-sequence": every stage is a group of classes meta-trained on in turn (no pre-training stage),
      each stage scored on every group's fixed test episodes (`test`, one split per group).
    """

    kind: str
    checkpoints: tuple[int, ...] = ()
    streams: int = 0
    incremental: str = ""
    batch: int = 1
    passes: int = 1  # passes over each task's (or the stream's) images

    def __post_init__(self):
        if self.kind not in ("stream", "tasks", "meta-sequence"):
            raise ValueError(f"continual kind {self.kind!r} is not stream, tasks or meta-sequence")
        if self.kind == "stream" and (
            self.streams < 1 or not self.checkpoints or list(self.checkpoints) != sorted(set(self.checkpoints))
        ):
            raise ValueError("a stream protocol needs at least one stream and increasing checkpoints")
        if self.kind == "tasks" and self.incremental not in ("task", "class"):
            raise ValueError(f"a task-sequence protocol is task- or class-incremental, not {self.incremental!r}")
        if self.batch < 1 or self.passes < 1:
            raise ValueError("batch and passes must be at least 1")

    def summary(self) -> dict:
        out: dict = {"kind": self.kind, "batch": self.batch, "passes": self.passes}
        if self.kind == "stream":
            out.update(checkpoints=list(self.checkpoints), streams=self.streams)
        if self.kind == "tasks":
            out["incremental"] = self.incremental
        return out


@dataclass(frozen=True)
class NoiseSpec:
    """Label noise on a protocol's training split (the noisy-label setting): `kind` "symmetric" moves a label to
    a uniformly drawn other class, "pair" moves class c to class c+1 (in sorted class order, wrapping); exactly
    round(rate * n) of each class's n training images are moved, which ones a pure function of the protocol's
    name, version and the image (benchmark.protocols.noisy.corrupt)."""

    kind: str
    rate: float

    def __post_init__(self):
        if self.kind not in ("symmetric", "pair") or not 0 < self.rate < 1:
            raise ValueError(f"noise {self.kind!r} at {self.rate!r}: kind is symmetric or pair, rate in (0, 1)")

    def summary(self) -> dict:
        return {"kind": self.kind, "rate": self.rate, "per_class": "exactly round(rate * n)"}


@dataclass(frozen=True)
class Stage:
    train: SplitSpec
    test: tuple[SplitSpec, ...]
    val: SplitSpec | None = None


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    setting: str
    description: str
    stages: tuple[Stage, ...]
    episode: EpisodeSpec | None  # None: not episodic (classification over the dataset's classes)
    image_size: int
    channels: int
    test_episodes: int = 600
    train_steps: int = 2000  # default meta-training budget (a method may declare its own)
    seeds: tuple[int, ...] = (0,)
    tags: tuple[str, ...] = field(default=())
    family: str = ""  # what paper recipes are keyed by, e.g. "omniglot"; default: the train dataset
    source: tuple[str, str] | None = field(default=None, compare=False)  # (file, sha256) of a protocol file
    continual: ContinualSpec | None = None  # how a continual protocol's stages run
    noise: NoiseSpec | None = None  # label noise on the training split (noisy-label protocols)

    def __post_init__(self):
        # which settings exist is the settings layer's business; here only the name's form is checked
        if not SLUG.match(self.setting):
            raise ValueError(f"protocol {self.name}: setting {self.setting!r} is not a lower-case slug")
        if not self.stages:
            raise ValueError(f"protocol {self.name}: no stages")
        if not self.family:
            object.__setattr__(self, "family", self.stages[0].train.dataset)

    @property
    def episode_spec(self) -> EpisodeSpec:
        """The episode shape, for the code paths that only episodic protocols reach."""
        if self.episode is None:
            raise ValueError(f"protocol {self.name} is not episodic: it has no episode shape")
        return self.episode

    @property
    def is_single_stage(self) -> bool:
        return len(self.stages) == 1 and len(self.stages[0].test) == 1

    @property
    def train(self) -> SplitSpec:
        return self.stages[0].train

    @property
    def val(self) -> SplitSpec | None:
        return self.stages[0].val

    @property
    def test(self) -> SplitSpec:
        return self.stages[-1].test[-1]

    @property
    def datasets(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for st in self.stages:
            for s in (st.train, st.val, *st.test):
                if s is not None:
                    seen[s.dataset] = None
        return tuple(seen)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "setting": self.setting,
            "family": self.family,
            **(
                {"ways": self.episode.ways, "shots": self.episode.shots, "queries": self.episode.queries}
                if self.episode is not None
                else {}
            ),
            "image_size": self.image_size,
            "datasets": list(self.datasets),
            "test_split": self.test.label,
            "test_episodes": self.test_episodes,
            **({"source": {"file": self.source[0], "sha256": self.source[1]}} if self.source else {}),
            **({"noise": self.noise.summary()} if self.noise else {}),
        }


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def register_protocol(p: Protocol) -> Protocol:
    PROTOCOLS.register(p.name, p)
    return p
