"""Domain generalisation: train a classifier on several source domains, score it on every image of a domain
it never saw (DomainBed's protocol, Gulrajani & Lopez-Paz 2021).

Model selection is DomainBed's default, training-domain validation: a fixed 20% of every source domain is
held out (the protocol's `val` split) and the checkpoint with the best mean accuracy over those domains is
scored. DomainBed also reports test-domain validation, an oracle that peeks at the target; the record
carries it apart (`selection.oracle`: the checkpoint best on a fixed 20% of the target, scored on the
other 80%), and the page marks it as such. The unit of scoring and pairing is the test image: a record
keeps every image's correctness, so two methods are compared image by image.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import BenchError
from ..protocols import Protocol
from ..records.io import MEAN_TOLERANCE
from ..run.config import RunConfig
from .base import PageSpec
from .domain_rules import ORACLE_RULE, SELECTION_RULE
from .images import FRACTION, IMAGE_COLUMNS, RANK_NOTE, ImageClassification, correctness, image_schema, wilson

__all__ = ["RANK_NOTE", "DomainClassification", "correctness", "wilson"]


class DomainClassification(ImageClassification):
    """The classification protocols of domain generalisation (PACS); the registered setting
    (domain_setting.DomainGeneralisation) hands them to this part."""

    torch_side = "domains_training"

    name = "domain-generalisation"
    title = "Domain generalisation"
    order = 30
    description = "Train on several domains, classify every image of a domain never seen in training."
    section_schema = image_schema(
        protocol=(
            ["source_domains", "target_domain", "val_split"],
            {
                "source_domains": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "target_domain": {"type": "string"},
                "selection_rule": {"const": SELECTION_RULE},
            },
        ),
        run=(
            [],
            {
                "selection": {
                    "type": "object",
                    "required": ["rule", "oracle"],
                    "properties": {
                        "rule": {"const": SELECTION_RULE},
                        "oracle": {
                            "type": "object",
                            "required": ["rule", "chosen_step", "accuracy", "images"],
                            "properties": {"rule": {"const": ORACLE_RULE}, "accuracy": FRACTION},
                        },
                    },
                }
            },
        ),
        summary=(["oracle_mean"], {"oracle_mean": FRACTION}),
    )
    page = PageSpec(
        columns=IMAGE_COLUMNS,
        plots=("domain-table", "compute"),
        unit_label="test image",
    )

    def supports(self, protocol: Protocol) -> str | None:
        if protocol.episode is not None or not protocol.is_single_stage or protocol.val is None:
            return "domain-generalisation protocols classify (no episodes) in one stage with validation data"
        return None

    def training_key(self, p: Protocol) -> tuple:
        return (p.name, p.version)  # every target domain trains on other sources: nothing is shared

    def check_method(self, cls, hp, protocol):
        if getattr(cls, "training_data", None) != "domains":
            raise BenchError(
                f"{cls.name} is an episodic learner; {protocol.name} needs a classifier trained on the source "
                f"domains (erm or mldg; `bench list` shows each method)"
            )

    # --- the record section ---------------------------------------------------------------------------
    def protocol_section(self, protocol, data):
        summary = protocol.summary()
        summary.pop("test_episodes", None)
        return {
            **summary,
            "classes": len(data.classes),
            "source_domains": list(data.source_domains),
            "target_domain": data.target_domain,
            "val_split": protocol.val.label,
            "test_images": len(data.test.images),
            "images_fingerprint": data.images_fingerprint,
            "selection_rule": SELECTION_RULE,
        }

    def summary_section(self, runs):
        oracle = float(np.mean([r["selection"]["oracle"]["accuracy"] for r in runs]))
        return {**super().summary_section(runs), "oracle_mean": oracle}

    def summary_problem(self, record):
        summary = record["summary"]
        oracle = np.mean([r["selection"]["oracle"]["accuracy"] for r in record["runs"]])
        if not math.isclose(summary["oracle_mean"], oracle, abs_tol=MEAN_TOLERANCE):
            return f"summary oracle_mean {summary['oracle_mean']:.6f} is not its seeds' ({oracle:.6f})"
        return None

    # --- verification --------------------------------------------------------------------------------
    def prepare_to_verify(self, protocol, record, device, data_dir):
        cfg = RunConfig(record["method"]["name"], (protocol.name,), data_dir=data_dir, progress=False)
        return self.training().prepare(protocol, device, cfg)
