"""Hyper-parameter search spaces: data beside each method, as its recipes are (DomainBed's convention).

A method's `SEARCH_SPACE` maps a hyper-parameter to the distribution a random search draws it from;
`bench sweep --trials N` draws N configurations per (method, protocol). Draws take a numpy Generator, so a
configuration is a pure function of the seed it was drawn with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class Distribution:
    def sample(self, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class LogUniform(Distribution):
    """Uniform in log space on [low, high]: learning rates, weight decays."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high:
            raise ValueError(f"LogUniform needs 0 < low < high (got {self.low}, {self.high})")

    def sample(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def describe(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform(Distribution):
    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Uniform needs low < high (got {self.low}, {self.high})")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def describe(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Choice(Distribution):
    """One of a few values, equally likely: step counts, switches, sizes."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise ValueError("Choice needs at least one value")

    def sample(self, rng: np.random.Generator) -> Any:
        value = self.values[int(rng.integers(len(self.values)))]
        return value.item() if isinstance(value, np.generic) else value

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


def sample_space(space: Mapping[str, Distribution], rng: np.random.Generator) -> dict[str, Any]:
    """One configuration: a draw from each distribution, in sorted key order (so adding a key to a space
    changes only the draws of the keys after it, never the meaning of the seed)."""
    return {key: space[key].sample(rng) for key in sorted(space)}
