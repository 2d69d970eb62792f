"""Genotypes: found cell architectures as versioned data files, registered as backbones by name.

A genotype file (`genotypes/<name>.json` in this package, format 1) holds the architecture (the space it was
found in, the cell, the network's cells, channels and stem), its fingerprint (sha256 of the architecture's
canonical JSON: an edited architecture no longer matches it, so a changed genotype needs a new name, as a
changed protocol needs a new version), the parameter count it was sized to, and its search: strategy,
objective, protocol, seed and cost (device, wall-clock seconds, episodes seen). Every file in the folder is
a backbone (`--hparam backbone=darts-omniglot-v1`); a record made with one carries `method.architecture`
(`architecture_block`), and `bench verify` refuses a record whose genotype has changed since
(`architecture_problem`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import BenchError
from ..core.files import atomic_write_text, sha256_bytes
from .backbones import BACKBONES, ResNet12, make_backbone
from .nas_space import OPS, CellChoice, CellNet, choice_net, count_params

FORMAT = 1
GENOTYPE_DIR = Path(__file__).resolve().parent / "genotypes"
NAME_PATTERN = "lower-case letters, digits and '-', ending in -v<version> (e.g. darts-omniglot-v1)"


@dataclass(frozen=True)
class Genotype:
    name: str
    space: str
    ops: tuple[str, ...]  # the candidate operations the cell was chosen among
    cell: CellChoice
    cells: int
    channels: int
    stem: bool = True
    params: dict[str, Any] = field(default_factory=dict, compare=False)  # what it was sized to
    search: dict[str, Any] = field(default_factory=dict, compare=False)  # how it was found, and the cost

    def architecture(self) -> dict[str, Any]:
        """What defines the network: the part the fingerprint covers."""
        return {
            "space": self.space,
            "ops": list(self.ops),
            "cell": [[[op, i] for op, i in node] for node in self.cell],
            "cells": self.cells,
            "channels": self.channels,
            "stem": self.stem,
        }

    @property
    def fingerprint(self) -> str:
        return sha256_bytes(json.dumps(self.architecture(), sort_keys=True, separators=(",", ":")).encode())

    def build(self, in_channels: int, image_size: int, running_stats: bool = True) -> CellNet:
        return choice_net(
            self.cell,
            in_channels,
            image_size,
            cells=self.cells,
            channels=self.channels,
            stem=self.stem,
            running_stats=running_stats,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "architecture": self.architecture(),
            "fingerprint": self.fingerprint,
            "params": self.params,
            "search": self.search,
        }

    def with_channels(self, channels: int, params: dict[str, Any]) -> Genotype:
        return Genotype(
            self.name, self.space, self.ops, self.cell, self.cells, channels, self.stem, params, self.search
        )


def is_versioned_name(name: str) -> bool:
    stem, _, version = name.rpartition("-v")
    ok_chars = all(c.islower() or c.isdigit() or c == "-" for c in name)
    return bool(stem) and version.isdigit() and ok_chars and name[0].isalnum()


def check_cell(cell: CellChoice, ops: tuple[str, ...], where: str) -> None:
    """A clear error for a cell that is not a DAG over its nodes or uses an operation outside its space."""
    if not cell:
        raise BenchError(f"{where}: the cell has no nodes")
    for j, node in enumerate(cell, start=1):
        if not node:
            raise BenchError(f"{where}: node {j} has no incoming edge")
        for op, i in node:
            if op not in ops or op == "none" or op not in OPS:
                raise BenchError(f"{where}: node {j} uses {op!r}, not one of the space's operations {list(ops)}")
            if not (isinstance(i, int) and 0 <= i < j):
                raise BenchError(f"{where}: node {j} reads node {i!r}; a node reads the input (0) or an earlier node")


def genotype_from_dict(d: Any, where: str) -> Genotype:
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise BenchError(f"{where}: not a genotype file of format {FORMAT} (format: {got!r})")
    try:
        name, a = str(d["name"]), d["architecture"]
        cell = tuple(tuple((str(op), int(i)) for op, i in node) for node in a["cell"])
        g = Genotype(
            name,
            str(a["space"]),
            tuple(str(o) for o in a["ops"]),
            cell,
            int(a["cells"]),
            int(a["channels"]),
            bool(a.get("stem", True)),
            dict(d.get("params") or {}),
            dict(d.get("search") or {}),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"{where}: malformed genotype ({type(e).__name__}: {e})") from None
    if not is_versioned_name(name):
        raise BenchError(f"{where}: genotype name {name!r} must be {NAME_PATTERN}")
    check_cell(g.cell, g.ops, where)
    if g.cells < 1 or g.channels < 1:
        raise BenchError(f"{where}: cells and channels must be at least 1")
    if d.get("fingerprint") != g.fingerprint:
        raise BenchError(
            f"{where}: the architecture does not match its fingerprint (edited after it was found?); a changed "
            f"genotype needs a new name (…-v2), so that records made with the old one still verify"
        )
    return g


def load_genotype(path: str | Path) -> Genotype:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"{path}: cannot read a genotype ({e})") from None
    g = genotype_from_dict(raw, str(path))
    if path.stem != g.name:
        raise BenchError(f"{path}: the file of genotype {g.name!r} must be named {g.name}.json")
    return g


def write_genotype(g: Genotype, path: str | Path, overwrite: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise BenchError(f"{path} exists; a genotype is never overwritten: choose another --name (…-v2)")
    atomic_write_text(path, json.dumps(g.to_dict(), indent=1) + "\n")
    return path


def next_name(stem: str, folder: Path = GENOTYPE_DIR) -> str:
    """`stem`-v<n> for the first n with no file in `folder` and no backbone of that name."""
    n = 1
    while (folder / f"{stem}-v{n}.json").exists() or f"{stem}-v{n}" in BACKBONES:
        n += 1
    return f"{stem}-v{n}"


GENOTYPES: dict[str, Genotype] = {}


def register_genotype(g: Genotype) -> None:
    def build(in_channels: int, image_size: int, running_stats: bool = True) -> CellNet:
        return g.build(in_channels, image_size, running_stats)

    BACKBONES.register(g.name, build)  # type: ignore[arg-type]  # a factory with a backbone class's signature
    GENOTYPES[g.name] = g


def register_folder(folder: Path = GENOTYPE_DIR) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.json")):
        g = load_genotype(path)
        if g.name not in GENOTYPES:
            register_genotype(g)
        names.append(g.name)
    return names


def reference_params(in_channels: int, image_size: int) -> dict[str, int]:
    """The hand-designed references' sizes at a protocol's input: what the page shows found cells against."""
    return {
        "conv4": count_params(lambda: make_backbone("conv4", in_channels, image_size)),
        "resnet12": count_params(lambda: ResNet12(in_channels, image_size)),
    }


def match_channels(g: Genotype, target: int, in_channels: int, image_size: int, most: int = 1024) -> int:
    """The width whose network has the parameter count nearest `target` (counts grow with the width)."""

    def size(c: int) -> int:
        return count_params(lambda: g.with_channels(c, {}).build(in_channels, image_size))

    lo, hi = 1, most
    while lo < hi:  # the first width at or above the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if size(mid) < target else (lo, mid)
    return min((c for c in (lo - 1, lo) if c >= 1), key=lambda c: abs(size(c) - target))


def architecture_block(backbone: Any, in_channels: int, image_size: int) -> dict[str, Any] | None:
    """What a record carries about a genotype backbone (None for any other backbone): its name, fingerprint
    and file, its size and the references' at the protocol's input, and its search's strategy and cost."""
    g = GENOTYPES.get(str(backbone))
    if g is None:
        return None
    keys = ("strategy", "objective", "protocol", "seed", "device", "wall_s", "episodes", "steps")
    return {
        "genotype": g.name,
        "fingerprint": g.fingerprint,
        "file": f"benchmark/methods/genotypes/{g.name}.json",
        "params": count_params(lambda: g.build(in_channels, image_size)),
        "reference_params": reference_params(in_channels, image_size),
        "search": {k: g.search[k] for k in keys if k in g.search},
    }


def architecture_problem(method: dict) -> str | None:
    """Why a record's backbone can no longer be rebuilt as it was scored (None when it can)."""
    arch = method.get("architecture")
    if not isinstance(arch, dict):
        return None
    name = arch.get("genotype")
    g = GENOTYPES.get(str(name))
    if g is None:
        return (
            f"the record's backbone is genotype {name!r}, which this code does not have (benchmark/methods/genotypes/)"
        )
    if g.fingerprint != arch.get("fingerprint"):
        return (
            f"genotype {name} has fingerprint {g.fingerprint[:12]}... here, the record's is "
            f"{str(arch.get('fingerprint'))[:12]}...: the architecture changed since the record was made"
        )
    return None


register_folder()
