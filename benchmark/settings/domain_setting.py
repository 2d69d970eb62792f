"""The registered domain-generalisation setting. Its protocols take two shapes, so it has two parts and hands
each call to the part that owns its protocol, record or data:

- classification (domains.py, PACS leave-one-domain-out): every image of an unseen domain is scored;
- few-shot episodes (domains_episodic.py, rotated Omniglot): fixed episodes in an unseen rotation are scored,
  the same episodes in a training rotation beside them.

A protocol with an episode shape is episodic; a record is episodic when its protocol section has an
`episodes_fingerprint` (a classification record has an `images_fingerprint`); a run when it has
`episode_accuracies`; scores when they carry a `reference`; prepared data by its protocol. The run loop and
the page ask `for_protocol` for the part itself, so each protocol's units and columns are its part's.
"""

from __future__ import annotations

from typing import Any

from ..protocols import PROTOCOLS, Protocol
from .base import Scored, Setting, register_setting
from .domains import DomainClassification
from .domains_episodic import DomainFewShot


class DomainGeneralisation(Setting):
    name = "domain-generalisation"
    title = "Domain generalisation"
    order = 30
    description = (
        "Train on several domains, test on one never seen in training: classify every image of it (PACS), "
        "or answer few-shot episodes in it beside the same episodes in a seen domain (rotated Omniglot)."
    )
    # what the setting-wide page (its tab, the DomainBed table) shows; each protocol's own come from its part
    unit = DomainClassification.unit
    rank_test = DomainClassification.rank_test
    page = DomainClassification.page

    def __init__(self) -> None:
        self.classification = DomainClassification()
        self.episodic = DomainFewShot()

    def for_protocol(self, protocol: str) -> Setting:
        known = PROTOCOLS.get(protocol) if protocol in PROTOCOLS else None
        return self._by_protocol(known) if known is not None else self.classification

    def _by_protocol(self, protocol: Protocol) -> Setting:
        return self.classification if protocol.episode is None else self.episodic

    def _by_record(self, record: dict) -> Setting:
        return self.episodic if "episodes_fingerprint" in record.get("protocol", {}) else self.classification

    def _by_run(self, run: dict) -> Setting:
        return self.episodic if "episode_accuracies" in run else self.classification

    def _by_data(self, data: Any) -> Setting:
        return self._by_protocol(data.protocol)

    # --- training --------------------------------------------------------------------------------------
    def supports(self, protocol):
        return self._by_protocol(protocol).supports(protocol)

    def training_key(self, protocol):
        return self._by_protocol(protocol).training_key(protocol)

    def check_method(self, cls, hp, protocol):
        return self._by_protocol(protocol).check_method(cls, hp, protocol)

    def prepare(self, protocol, device, cfg, shared):
        return self._by_protocol(protocol).prepare(protocol, device, cfg, shared)

    def build_model(self, cls, data, hp):
        return self._by_data(data).build_model(cls, data, hp)

    def train(self, model, data, cfg, steps, seed, device):
        return self._by_data(data).train(model, data, cfg, steps, seed, device)

    def score(self, model, data, device, progress=True):
        return self._by_data(data).score(model, data, device, progress)

    # --- the record section ------------------------------------------------------------------------------
    def check_record(self, record):
        return self._by_record(record).check_record(record)

    def protocol_section(self, protocol, data):
        return self._by_protocol(protocol).protocol_section(protocol, data)

    def data_fingerprints(self, data):
        return self._by_data(data).data_fingerprints(data)

    def run_section(self, scored: Scored):
        return (self.episodic if "reference" in scored.extra else self.classification).run_section(scored)

    def summary_section(self, runs):
        return self._by_run(runs[0]).summary_section(runs)

    def section_problem(self, record):
        return self._by_record(record).section_problem(record)

    # --- the paired statistic ------------------------------------------------------------------------------
    def units(self, record):
        return self._by_record(record).units(record)

    def pairing_key(self, record):
        return self._by_record(record).pairing_key(record)

    def pairing_problem(self, a, b):
        if self._by_record(a) is not self._by_record(b):
            return "one record classifies images and the other answers episodes"
        return self._by_record(a).pairing_problem(a, b)

    # --- verification --------------------------------------------------------------------------------------
    def prepare_to_verify(self, protocol, record, device, data_dir):
        return self._by_record(record).prepare_to_verify(protocol, record, device, data_dir)

    def scored_on_problem(self, record, data):
        return self._by_record(record).scored_on_problem(record, data)

    def recorded_units(self, run):
        return self._by_run(run).recorded_units(run)

    def rescore(self, model, data, indices, device):
        return self._by_data(data).rescore(model, data, indices, device)

    def verify_tolerance(self, record):
        return self._by_record(record).verify_tolerance(record)


register_setting(DomainGeneralisation())
