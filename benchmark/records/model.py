"""Typed access to a record, mirroring the v2 JSON Schema (schema/result-v2.schema.json).

`Record.from_dict` takes a validated record dict (what `read_record` returns) and gives attribute
access to the envelope every setting shares; a setting's own fields stay in each part's `section`
mapping, which the setting reads. `to_dict` gives the JSON back unchanged, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_RUN_KEYS = (
    "seed",
    "mean",
    "train_steps",
    "train_time_s",
    "eval_time_s",
    "checkpoint",
    "selection",
    "trained_with",
    "train_budget",
)
_PROTOCOL_KEYS = ("name", "version", "setting", "family", "datasets")
_SUMMARY_KEYS = ("mean", "n_seeds", "seed_ci95", "train_time_s", "eval_time_s")


def _rest(obj: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in known}


@dataclass(frozen=True)
class Checkpoint:
    path: str
    sha256: str


@dataclass(frozen=True)
class ProtocolInfo:
    name: str
    version: int
    setting: str
    family: str | None = None
    datasets: tuple[str, ...] = ()
    section: Mapping[str, Any] = field(default_factory=dict)  # the setting's fields (ways, shots, ...)


@dataclass(frozen=True)
class MethodInfo:
    name: str
    hparams: Mapping[str, Any]
    backbone: str | None = None
    paper: str | None = None
    recipe: str | None = None
    source: Mapping[str, Any] | None = None  # a submission's file, class and sha256

    @property
    def entry(self) -> str:
        """How the leaderboard names it: another backbone is another entry."""
        return f"{self.name} · {self.backbone or '—'}"


@dataclass(frozen=True)
class SeedRun:
    seed: int
    mean: float
    train_steps: int
    train_time_s: float
    eval_time_s: float
    checkpoint: Checkpoint | None = None
    selection: Mapping[str, Any] = field(default_factory=lambda: {"rule": "final"})
    trained_with: tuple[str, ...] = ()
    train_budget: Mapping[str, Any] | None = None
    section: Mapping[str, Any] = field(default_factory=dict)  # the setting's fields (episode accuracies, ...)

    @property
    def selection_rule(self) -> str:
        return str(self.selection.get("rule", "final"))


@dataclass(frozen=True)
class Summary:
    mean: float
    n_seeds: int
    seed_ci95: float | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    section: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    schema_version: int
    run_id: str
    created: str
    kind: str
    setting: str
    protocol: ProtocolInfo
    method: MethodInfo
    seeds: tuple[int, ...]
    runs: tuple[SeedRun, ...]
    summary: Summary
    device: Mapping[str, Any]
    environment: Mapping[str, Any]
    code: Mapping[str, Any]
    data: Mapping[str, str]
    notes: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        p, m, s = d["protocol"], d["method"], d["summary"]
        runs = tuple(
            SeedRun(
                seed=r["seed"],
                mean=r["mean"],
                train_steps=r["train_steps"],
                train_time_s=r["train_time_s"],
                eval_time_s=r["eval_time_s"],
                checkpoint=Checkpoint(r["checkpoint"]["path"], r["checkpoint"]["sha256"])
                if r.get("checkpoint")
                else None,
                selection=r.get("selection") or {"rule": "final"},
                trained_with=tuple(r.get("trained_with", ())),
                train_budget=r.get("train_budget"),
                section=_rest(r, _RUN_KEYS),
            )
            for r in d["runs"]
        )
        return cls(
            schema_version=d["schema_version"],
            run_id=d["run_id"],
            created=d["created"],
            kind=d["kind"],
            setting=d["setting"],
            protocol=ProtocolInfo(
                p["name"],
                p["version"],
                p["setting"],
                p.get("family"),
                tuple(p.get("datasets", ())),
                _rest(p, _PROTOCOL_KEYS),
            ),
            method=MethodInfo(
                m["name"], m["hparams"], m.get("backbone"), m.get("paper"), m.get("recipe"), m.get("source")
            ),
            seeds=tuple(d["seeds"]),
            runs=runs,
            summary=Summary(
                s["mean"],
                s["n_seeds"],
                s.get("seed_ci95"),
                s.get("train_time_s"),
                s.get("eval_time_s"),
                _rest(s, _SUMMARY_KEYS),
            ),
            device=d["device"],
            environment=d["environment"],
            code=d["code"],
            data=d["data"],
            notes=d.get("notes"),
            raw=d,
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)

    @property
    def train_time_s(self) -> float:
        return (
            self.summary.train_time_s
            if self.summary.train_time_s is not None
            else sum(r.train_time_s for r in self.runs)
        )

    @property
    def eval_time_s(self) -> float:
        return (
            self.summary.eval_time_s if self.summary.eval_time_s is not None else sum(r.eval_time_s for r in self.runs)
        )

    @property
    def device_label(self) -> str:
        return str(self.device["type"]) + (f" ({self.device['name']})" if self.device.get("name") else "")
