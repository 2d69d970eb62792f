"""The registered domain-generalisation setting. Its protocols take two shapes, so it has two parts and hands
each call (through SettingParts) to the part that owns its protocol, record or data:

- classification (domains.py, PACS leave-one-domain-out): every image of an unseen domain is scored;
- few-shot episodes (domains_episodic.py, rotated Omniglot): fixed episodes in an unseen rotation are scored,
  the same episodes in a training rotation beside them.

A protocol with an episode shape is episodic; a record is episodic when its protocol section has an
`episodes_fingerprint` (a classification record has an `images_fingerprint`); a run when it has
`episode_accuracies`; scores when they carry a `reference`; prepared data by its protocol. The run loop and
the page ask `for_protocol` for the part itself, so each protocol's units and columns are its part's.
"""

from __future__ import annotations

from ..protocols import Protocol
from .base import Scored, Setting, register_setting
from .domains import DomainClassification
from .domains_episodic import DomainFewShot
from .parts import SettingParts


class DomainGeneralisation(SettingParts):
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

    def parts(self) -> tuple[Setting, ...]:
        return (self.classification, self.episodic)

    def by_protocol(self, protocol: Protocol) -> Setting:
        return self.classification if protocol.episode is None else self.episodic

    def by_record(self, record: dict) -> Setting:
        return self.episodic if "episodes_fingerprint" in record.get("protocol", {}) else self.classification

    def by_run(self, run: dict) -> Setting:
        return self.episodic if "episode_accuracies" in run else self.classification

    def by_scored(self, scored: Scored) -> Setting:
        return self.episodic if "reference" in scored.extra else self.classification

    def pairing_problem(self, a, b):
        if self.by_record(a) is not self.by_record(b):
            return "one record classifies images and the other answers episodes"
        return self.by_record(a).pairing_problem(a, b)


register_setting(DomainGeneralisation())
