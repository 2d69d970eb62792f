"""A setting (few-shot, cross-domain, domain generalisation, continual, ...) is the unit that owns

1. how its protocols train (`prepare`, `train`: one stage or a sequence of stages),
2. what they score (`score`: a vector of paired *units*, e.g. test episodes, with a fixed order),
3. the record section it writes (`run_section`, `summary_section`, `section_problem`),
4. the paired statistic that ranks it (`units`, `pairing_key`, `rank_test`), and
5. the page section that shows it (`page`).

The run loop (runner.py), the leaderboard's board and the page call these hooks and nothing
setting-specific, so a new setting is a new module with a `Setting` subclass registered in
`SETTINGS`; no existing setting changes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import jsonschema
import numpy as np

from ..core.errors import InvalidRecord
from ..core.registry import Registry, UnknownName
from ..protocols import Protocol
from ..records import read_record
from ..records.validators import check
from ..run.config import RunConfig

if TYPE_CHECKING:  # only for annotations: reading records must not import torch
    import torch

    from ..methods import MetaLearner


@dataclass(frozen=True)
class PageSpec:
    """What the page shows for a setting: its table's columns and the plots below them, by name
    (the page layer knows how to draw each), and how to name the unit scores are paired over."""

    columns: tuple[str, ...]
    plots: tuple[str, ...] = ()
    unit_label: str = "unit"


@dataclass
class Trained:
    seconds: float
    steps: int
    selection: dict[str, Any] = field(default_factory=lambda: {"rule": "final"})
    extra: dict[str, Any] = field(default_factory=dict)  # setting-specific run fields learned in training


@dataclass
class Scored:
    units: np.ndarray  # one score in [0, 1] per paired unit, in the protocol's fixed order
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)  # setting-specific run fields


class Setting:
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    order: ClassVar[int] = 100  # tab order on the page, lowest first
    unit: ClassVar[str] = "unit"  # what is scored and paired, e.g. "test episode"
    rank_test: ClassVar[str] = "two-sided Wilcoxon signed-rank test"
    page: ClassVar[PageSpec] = PageSpec(columns=())

    def for_protocol(self, protocol: str) -> Setting:
        """The setting that runs, scores and shows this protocol: itself, except for a setting whose protocols
        take several shapes (domain generalisation: classification or episodes), which returns the part that
        owns this one, with its own unit and page columns."""
        return self

    # --- 1. training --------------------------------------------------------------------------------
    def supports(self, protocol: Protocol) -> str | None:
        """None if this setting can run the protocol, else why not."""
        return None

    def training_key(self, protocol: Protocol) -> tuple:
        """Protocols with equal keys can share one training run per seed (each still gets a record)."""
        return (protocol.name,)

    def check_method(self, cls: type[MetaLearner], hp: dict[str, Any], protocol: Protocol) -> None:
        """Raise for a method/hyper-parameter combination that cannot run here, before any data is loaded."""

    # The torch side (data, model, training, scoring) lives in a sibling module named here, imported when a
    # run starts: reading records and drawing the page never import torch and Lightning. The four hooks
    # below forward to its functions of the same names; a setting whose calls differ overrides the hook.
    torch_side: ClassVar[str] = ""

    def training(self) -> ModuleType:
        if not self.torch_side:
            raise NotImplementedError(f"setting {self.name!r} names no torch_side module")
        return importlib.import_module(f"{__package__}.{self.torch_side}")

    def prepare(self, protocol: Protocol, device: torch.device, cfg: RunConfig, shared: dict) -> Any:
        return self.training().prepare(protocol, device, cfg, shared)

    def build_model(self, cls: type[MetaLearner], data: Any, hp: dict[str, Any]) -> MetaLearner:
        return self.training().build_model(cls, data, hp)

    def train(
        self, model: MetaLearner, data: Any, cfg: RunConfig, steps: int, seed: int, device: torch.device
    ) -> Trained:
        return self.training().train(model, data, cfg, steps, seed, device)

    # --- 2. scoring ----------------------------------------------------------------------------------
    def score(self, model: MetaLearner, data: Any, device: torch.device, progress: bool = True) -> Scored:
        return self.training().score(model, data, device, progress)

    # --- 3. the record section -----------------------------------------------------------------------
    # JSON Schema of this setting's part of a record: {"protocol": ..., "run": ..., "summary": ...}
    section_schema: ClassVar[dict[str, dict]] = {}

    def check_record(self, record: dict) -> None:
        """Raise InvalidRecord when the record's section is malformed or contradicts itself."""
        parts = (
            ("protocol", "protocol", record["protocol"]),
            ("summary", "summary", record["summary"]),
            *((f"runs/{i}", "run", r) for i, r in enumerate(record["runs"])),
        )
        for where, part, obj in parts:
            sub = self.section_schema.get(part)
            if not sub:
                continue
            try:
                check(obj, sub)  # compiled once per schema: see records.validators
            except jsonschema.ValidationError as e:
                inner = "/".join(str(p) for p in e.absolute_path)
                raise InvalidRecord(f"{self.name} section: schema violation at {where}/{inner}: {e.message}") from None
        problem = self.section_problem(record)
        if problem:
            raise InvalidRecord(problem)

    def protocol_section(self, protocol: Protocol, data: Any) -> dict[str, Any]:
        return protocol.summary()

    def data_fingerprints(self, data: Any) -> dict[str, str]:
        """Dataset name -> fingerprint of the prepared data the run read (the record's `data`)."""
        return dict(getattr(data, "data_fingerprints", {}))

    def run_section(self, scored: Scored) -> dict[str, Any]:
        raise NotImplementedError

    def summary_section(self, runs: list[dict]) -> dict[str, Any]:
        raise NotImplementedError

    def section_problem(self, record: dict) -> str | None:
        """What the schema cannot see but a ranked table relies on; None when all is well."""
        return None

    # --- 4. the paired statistic ---------------------------------------------------------------------
    def units(self, record: dict) -> np.ndarray:
        """The record's per-unit scores, averaged over its training seeds: what ranking pairs."""
        raise NotImplementedError

    def pairing_key(self, record: dict) -> tuple:
        """Records with equal keys were scored on the same units and may be compared unit by unit."""
        raise NotImplementedError

    def pairing_problem(self, a: dict, b: dict) -> str | None:
        """Why two records cannot be compared unit by unit; None when they can."""
        pa, pb = a["protocol"], b["protocol"]
        if pa["name"] != pb["name"]:
            return f"different protocols ({pa['name']} vs {pb['name']})"
        if pa["version"] != pb["version"]:
            return f"different protocol versions (v{pa['version']} vs v{pb['version']})"
        if self.pairing_key(a) != self.pairing_key(b):
            return f"different {self.unit}s (their fingerprints or counts differ)"
        return None

    def seed_metrics(self, record: dict) -> dict[str, dict[int, float]]:
        """Metrics a setting also compares over training seeds (paired by seed), by name: seed -> value."""
        return {}

    # --- 5. verification (`bench verify` re-scores units from the record's checkpoints) ------------------
    def prepare_to_verify(self, protocol: Protocol, record: dict, device: torch.device, data_dir: str | None) -> Any:
        """The data to re-score the record's units with, regenerated from the protocol."""
        raise NotImplementedError

    def scored_on_problem(self, record: dict, data: Any) -> str | None:
        """Why the regenerated units are not the ones the record was scored on (fingerprints); None if they are."""
        raise NotImplementedError

    def recorded_units(self, run: dict) -> np.ndarray:
        """One seed's unit scores as recorded: the ranked units, then any the setting also re-scores (a reference)."""
        raise NotImplementedError

    def rescore(self, model: MetaLearner, data: Any, indices: list[int], device: torch.device) -> np.ndarray:
        """The scores of units `indices` (each computed on its own terms: batching must not matter)."""
        raise NotImplementedError

    def verify_tolerance(self, record: dict) -> tuple[float, float]:
        """(per unit, mean absolute) differences between recorded and re-scored units that still pass."""
        return 1e-9, 1e-9


SETTINGS: Registry[Setting] = Registry("setting")


def register_setting(setting: Setting) -> Setting:
    if not setting.name:
        raise TypeError("a setting needs a name")
    SETTINGS.register(setting.name, setting)
    return setting


def check_record(record: dict) -> Setting:
    """The record's setting, after checking the setting's section of it; InvalidRecord for an unknown setting."""
    try:
        setting = SETTINGS.get(record["setting"])
    except UnknownName as e:
        raise InvalidRecord(f"unknown setting: {e}") from None
    setting.check_record(record)
    return setting


def load_record(path: str | Path) -> dict:
    """A record file, migrated to the current schema, with its envelope and its setting's section checked."""
    record = read_record(Path(path))
    check_record(record)
    return record
