"""A registered setting whose protocols take several shapes (domain generalisation: classification or episodes;
continual: a stream, a task sequence or a meta-training sequence) has one part per shape, each a `Setting` of
its own. `SettingParts` hands every hook to the part that owns its protocol, record, run, data or scores, so a
setting with parts only says how to tell them apart. The run loop and the page ask `for_protocol` for the part
itself, so each protocol's units and columns are its part's."""

from __future__ import annotations

from typing import Any

from ..protocols import PROTOCOLS, Protocol
from .base import Scored, Setting


class SettingParts(Setting):
    def parts(self) -> tuple[Setting, ...]:
        raise NotImplementedError

    def by_protocol(self, protocol: Protocol) -> Setting:
        raise NotImplementedError

    def by_record(self, record: dict) -> Setting:
        raise NotImplementedError

    def by_run(self, run: dict) -> Setting:
        raise NotImplementedError

    def by_scored(self, scored: Scored) -> Setting:
        raise NotImplementedError

    def by_data(self, data: Any) -> Setting:
        return self.by_protocol(data.protocol)

    def for_protocol(self, protocol: str) -> Setting:
        known = PROTOCOLS.get(protocol) if protocol in PROTOCOLS else None
        return self.by_protocol(known) if known is not None else self.parts()[0]

    # --- training --------------------------------------------------------------------------------------
    def supports(self, protocol):
        return self.by_protocol(protocol).supports(protocol)

    def training_key(self, protocol):
        return self.by_protocol(protocol).training_key(protocol)

    def check_method(self, cls, hp, protocol):
        return self.by_protocol(protocol).check_method(cls, hp, protocol)

    def prepare(self, protocol, device, cfg, shared):
        return self.by_protocol(protocol).prepare(protocol, device, cfg, shared)

    def build_model(self, cls, data, hp):
        return self.by_data(data).build_model(cls, data, hp)

    def train(self, model, data, cfg, steps, seed, device):
        return self.by_data(data).train(model, data, cfg, steps, seed, device)

    def score(self, model, data, device, progress=True):
        return self.by_data(data).score(model, data, device, progress)

    # --- the record section ------------------------------------------------------------------------------
    def check_record(self, record):
        return self.by_record(record).check_record(record)

    def protocol_section(self, protocol, data):
        return self.by_protocol(protocol).protocol_section(protocol, data)

    def data_fingerprints(self, data):
        return self.by_data(data).data_fingerprints(data)

    def run_section(self, scored: Scored):
        return self.by_scored(scored).run_section(scored)

    def summary_section(self, runs):
        return self.by_run(runs[0]).summary_section(runs)

    def section_problem(self, record):
        return self.by_record(record).section_problem(record)

    # --- the paired statistic ------------------------------------------------------------------------------
    def units(self, record):
        return self.by_record(record).units(record)

    def pairing_key(self, record):
        return self.by_record(record).pairing_key(record)

    def pairing_problem(self, a, b):
        if self.by_record(a) is not self.by_record(b):
            return f"the records are of different kinds of {self.name} protocol"
        return self.by_record(a).pairing_problem(a, b)

    def seed_metrics(self, record):
        return self.by_record(record).seed_metrics(record)

    # --- verification --------------------------------------------------------------------------------------
    def prepare_to_verify(self, protocol, record, device, data_dir):
        return self.by_record(record).prepare_to_verify(protocol, record, device, data_dir)

    def scored_on_problem(self, record, data):
        return self.by_record(record).scored_on_problem(record, data)

    def recorded_units(self, run):
        return self.by_run(run).recorded_units(run)

    def rescore(self, model, data, indices, device):
        return self.by_data(data).rescore(model, data, indices, device)

    def verify_tolerance(self, record):
        return self.by_record(record).verify_tolerance(record)
