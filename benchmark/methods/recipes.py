"""Paper recipes and paper numbers: data beside each method.

A method lists `RECIPES`, the hyper-parameters (and training budget) its paper used, each for a
protocol family (`omniglot`, `mini-imagenet`, ...) and optionally only for some ways or shots.
The first recipe that matches a protocol is the default for it; `--hparam` overrides it, and the
record names the recipe. A method also lists `PAPER_RESULTS`: the accuracy its paper reported per
protocol, so the page and `bench list --method` can show "paper vs here".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..protocols import Protocol


@dataclass(frozen=True)
class Recipe:
    family: str  # a protocol family, as Protocol.family names it
    hparams: Mapping[str, Any] = field(default_factory=dict)
    train_steps: int | None = None  # None: the protocol's budget
    ways: int | None = None  # only for protocols with this many ways (None: any)
    shots: int | None = None  # only for protocols with this many shots (None: any)
    source: str = ""  # where the paper states it, e.g. "Sec. 3.1"
    note: str = ""  # what differs from the paper here, and why

    def matches(self, protocol: Protocol) -> bool:
        if self.family != protocol.family:
            return False
        e = protocol.episode
        if e is None:  # a classification protocol: a recipe for it names no episode shape
            return self.ways is None and self.shots is None
        return self.ways in (None, e.ways) and self.shots in (None, e.shots)

    @property
    def key(self) -> str:
        bits = (
            [self.family] + ([f"{self.ways}-way"] if self.ways else []) + ([f"{self.shots}-shot"] if self.shots else [])
        )
        return "/".join(bits)


@dataclass(frozen=True)
class ResolvedRecipe:
    name: str  # "<method>:<family>[/<ways>-way][/<shots>-shot]", in records
    recipe: Recipe

    @property
    def hparams(self) -> Mapping[str, Any]:
        return self.recipe.hparams

    @property
    def train_steps(self) -> int | None:
        return self.recipe.train_steps


@dataclass(frozen=True)
class PaperResult:
    mean: float  # accuracy in percent, as the paper prints it
    ci95: float | None = None  # its 95% interval half-width in points, when given
    source: str = ""  # table or section, and the paper when it is not the method's own
    note: str = ""  # e.g. "a different backbone" or "reported by a later paper"
    # along a continual stream: (classes seen, accuracy in percent), ending at `mean`
    curve: tuple[tuple[int, float], ...] = ()


def resolve_recipe(cls: Any, protocol: Protocol) -> ResolvedRecipe | None:
    for r in getattr(cls, "RECIPES", ()):
        if r.matches(protocol):
            return ResolvedRecipe(f"{cls.name}:{r.key}", r)
    return None


def paper_result(cls: Any, protocol: str) -> PaperResult | None:
    return getattr(cls, "PAPER_RESULTS", {}).get(protocol)
