"""Protocols: frozen, versioned values registered by name.

A protocol says which data a method may train on and which fixed episodes it is tested on. The
value is general enough for the settings to come: a `Stage` trains on one split and is evaluated
on several, so cross-domain is one stage tested on another dataset, domain generalisation is one
stage trained on some domains and tested on another, and a continual protocol is a sequence of
stages evaluated after each. Any change to a registered protocol's meaning gets a new version.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .registry import Registry

SETTINGS = ("few-shot", "cross-domain", "domain-generalisation", "continual")


@dataclass(frozen=True)
class SplitSpec:
    """Which images and classes of a prepared dataset form one split."""
    dataset: str
    class_split: str | None = None        # a file in benchmark/splits, e.g. "omniglot-vinyals-v1"
    part: str | None = None               # its part: "train", "val" or "test"
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()   # row filters, e.g. (("domain", ("sketch",)),)
    rotations: tuple[int, ...] = (0,)     # degrees; each (class, rotation) is a class of its own

    @property
    def label(self) -> str:
        bits = [self.dataset]
        if self.class_split:
            bits.append(f"{self.class_split}:{self.part}")
        bits += [f"{col}={'+'.join(vals)}" for col, vals in self.where]
        if self.rotations != (0,):
            bits.append("rot" + "+".join(str(r) for r in self.rotations))
        return "/".join(bits)


@dataclass(frozen=True)
class EpisodeSpec:
    ways: int
    shots: int
    queries: int = 15

    def __str__(self) -> str:
        return f"{self.ways}-way {self.shots}-shot ({self.queries} queries per class)"


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
    episode: EpisodeSpec
    image_size: int
    channels: int
    test_episodes: int = 600
    train_steps: int = 2000          # default meta-training budget (a method may declare its own)
    seeds: tuple[int, ...] = (0,)
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ValueError(f"protocol {self.name}: setting {self.setting!r} is not one of {SETTINGS}")
        if not self.stages:
            raise ValueError(f"protocol {self.name}: no stages")

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
        return {"name": self.name, "version": self.version, "setting": self.setting,
                "ways": self.episode.ways, "shots": self.episode.shots, "queries": self.episode.queries,
                "image_size": self.image_size, "datasets": list(self.datasets),
                "test_split": self.test.label, "test_episodes": self.test_episodes}


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def _register(p: Protocol) -> Protocol:
    PROTOCOLS.register(p.name, p)
    return p


ROT4 = (0, 90, 180, 270)
OMNI = "omniglot-vinyals-v1"
for ways in (5, 20):
    for shots in (1, 5):
        _register(Protocol(
            name=f"omniglot-{ways}w{shots}s", version=1, setting="few-shot",
            description=f"Omniglot, Vinyals split with rotations as extra classes (4,112 train / 1,692 test "
                        f"classes), 28x28 grey, {ways}-way {shots}-shot",
            stages=(Stage(train=SplitSpec("omniglot", OMNI, "train", rotations=ROT4),
                          val=SplitSpec("omniglot", OMNI, "val", rotations=ROT4),
                          test=(SplitSpec("omniglot", OMNI, "test", rotations=ROT4),)),),
            episode=EpisodeSpec(ways, shots, 15), image_size=28, channels=1, train_steps=5000))
        _register(Protocol(
            name=f"omniglot-lake-{ways}w{shots}s", version=1, setting="few-shot",
            description=f"Omniglot, Lake split: train on the 30 background alphabets, test on the 20 "
                        f"evaluation alphabets (no rotations), 28x28 grey, {ways}-way {shots}-shot",
            stages=(Stage(train=SplitSpec("omniglot", where=(("split", ("background",)),)),
                          test=(SplitSpec("omniglot", where=(("split", ("evaluation",)),)),)),),
            episode=EpisodeSpec(ways, shots, 15), image_size=28, channels=1, train_steps=5000))

CAL = "caltech101-v1"
for shots in (1, 5):
    _register(Protocol(
        name=f"caltech101-5w{shots}s", version=1, setting="few-shot",
        description=f"Caltech-101, metabench seeded class split v1 (60 train / 15 val / 26 test classes), "
                    f"84x84 RGB, 5-way {shots}-shot",
        stages=(Stage(train=SplitSpec("caltech101", CAL, "train"), val=SplitSpec("caltech101", CAL, "val"),
                      test=(SplitSpec("caltech101", CAL, "test"),)),),
        episode=EpisodeSpec(5, shots, 15), image_size=84, channels=3, train_steps=3000))
    for domain in ("photo", "art_painting", "cartoon", "sketch"):
        _register(Protocol(
            name=f"caltech101-to-pacs-{domain.replace('_', '-')}-5w{shots}s", version=1, setting="cross-domain",
            description=f"meta-train on the Caltech-101 train classes (no PACS classes among them), test on "
                        f"PACS {domain} (7 classes), 84x84 RGB, 5-way {shots}-shot",
            stages=(Stage(train=SplitSpec("caltech101", CAL, "train"), val=SplitSpec("caltech101", CAL, "val"),
                          test=(SplitSpec("pacs", where=(("domain", (domain,)),)),)),),
            episode=EpisodeSpec(5, shots, 15), image_size=84, channels=3, train_steps=3000))
