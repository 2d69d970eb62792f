"""Few-shot under domain shift: the episodic protocols of domain generalisation (rotated-omniglot-dg-*).

The domains are rotations. Methods meta-train and select their model (on validation episodes) exactly as in
the few-shot setting, on the training split pooled over its source rotations; a method that trains on
domains apart (`training_data = "domains"`, e.g. MLDG) gets, each step, `meta_batch` episodes from every
source rotation. The protocol has two test splits, the same characters at a rotation it never trained on (the
target, last: what is scored, ranked and paired) and at one of its training rotations (the reference).
The fixed test episodes are one index applied to both, so the reference answers the same episodes (the same
characters and images, only the rotation differs) and the drop from reference to target is paired episode
by episode. Each run records the reference beside the target (`runs[].reference`), the summary their means
and the 95% CI of the drop (`reference_mean`, `reference_ci95`, `drop_ci95`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..core.errors import BenchError
from ..protocols import Protocol
from ..records import mean_ci
from ..records.io import MEAN_TOLERANCE
from .episodic import Episodic, _none_if_nan, interval_problem


def domain_name(rotation: int) -> str:
    """A rotation as a domain name: the suffix build_view gives its classes ("rot075")."""
    return f"rot{rotation:03d}"


def shift_problem(protocol: Protocol) -> str | None:
    """Why a protocol is not an episodic domain-generalisation protocol; None when it is one."""
    if protocol.episode is None:
        return "it classifies (no episodes); the classification protocols run in the other part of this setting"
    if len(protocol.stages) != 1 or len(protocol.stages[0].test) != 2 or protocol.val is None:
        return (
            "an episodic domain-generalisation protocol has one stage with validation data and two test splits, "
            "the reference (a training rotation) and the target (an unseen rotation), in that order"
        )
    reference, target = protocol.stages[0].test
    if len(reference.rotations) != 1 or len(target.rotations) != 1:
        return "its reference and target test splits must each be one rotation"
    if dataclasses.replace(target, rotations=reference.rotations) != reference:
        return "its reference and target test splits must be the same images at two rotations"
    if target.rotations[0] in protocol.train.rotations:
        return f"its target rotation {target.rotations[0]} is one of the training rotations"
    if reference.rotations[0] not in protocol.train.rotations:
        return f"its reference rotation {reference.rotations[0]} is not one of the training rotations"
    return None


_NUMBER_OR_NULL = {"type": ["number", "null"]}
_ACCURACIES = {"type": "array", "minItems": 1, "items": {"type": "number", "minimum": 0, "maximum": 1}}


def _extend(part: dict, required: list[str], properties: dict) -> dict:
    return {
        **part,
        "required": [*part["required"], *required],
        "properties": {**part["properties"], **properties},
    }


class DomainFewShot(Episodic):
    """The episodic protocols of domain generalisation; the registered setting (domain_setting) hands them here."""

    torch_side = "domains_episodic_training"

    name = "domain-generalisation"
    title = "Domain generalisation"
    order = 30
    description = "Few-shot episodes in a domain never seen in training, beside the same episodes in a seen one."
    section_schema = {
        "protocol": _extend(
            Episodic.section_schema["protocol"],
            ["source_domains", "target_domain", "reference_domain", "reference_split", "reference_fingerprint"],
            {
                "source_domains": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "target_domain": {"type": "string"},
                "reference_domain": {"type": "string"},
                "reference_split": {"type": "string"},
                "reference_fingerprint": {"type": "string"},
            },
        ),
        "run": _extend(
            Episodic.section_schema["run"],
            ["reference"],
            {
                "reference": {
                    "type": "object",
                    "required": ["split", "episode_accuracies", "mean", "ci95", "n"],
                    "properties": {
                        "split": {"type": "string"},
                        "episode_accuracies": _ACCURACIES,
                        "mean": {"type": "number", "minimum": 0, "maximum": 1},
                        "ci95": _NUMBER_OR_NULL,
                        "n": {"type": "integer", "minimum": 1},
                    },
                }
            },
        ),
        "summary": _extend(
            Episodic.section_schema["summary"],
            ["reference_mean", "reference_ci95", "drop_ci95"],
            {
                "reference_mean": {"type": "number", "minimum": 0, "maximum": 1},
                "reference_ci95": _NUMBER_OR_NULL,
                "drop_ci95": _NUMBER_OR_NULL,
            },
        ),
    }

    def supports(self, protocol):
        return shift_problem(protocol)

    def check_method(self, cls, hp, protocol):
        if cls.training_data == "domains":
            if len(protocol.train.rotations) < 2:
                raise BenchError(
                    f"{cls.name} trains on source domains apart and {protocol.name} trains on one rotation; "
                    f"it needs at least two"
                )
            cls.training_episodes(hp, protocol)
        else:
            super().check_method(cls, hp, protocol)

    def prepare(self, protocol, device, cfg, shared):
        val_episodes = cfg.val_episodes if cfg.select == "auto" else 0
        return self.training().prepare(protocol, device, cfg.episodes, cfg.data_dir, shared, val_episodes)

    # --- the record section ---------------------------------------------------------------------------
    def protocol_section(self, protocol, data):
        return {
            **super().protocol_section(protocol, data),
            "source_domains": [domain_name(r) for r in protocol.train.rotations],
            "target_domain": domain_name(protocol.test.rotations[0]),
            "reference_domain": domain_name(protocol.stages[0].test[0].rotations[0]),
            "reference_split": data.reference.label,
            "reference_fingerprint": data.reference_fingerprint,
            "val_split": protocol.val.label,
        }

    def summary_section(self, runs):
        reference = np.mean([r["reference"]["episode_accuracies"] for r in runs], axis=0)
        drop = reference - self._target(runs)
        return {
            **super().summary_section(runs),
            "reference_mean": float(np.mean([r["reference"]["mean"] for r in runs])),
            "reference_ci95": _none_if_nan(mean_ci(reference).ci95),
            "drop_ci95": _none_if_nan(mean_ci(drop).ci95),
        }

    @staticmethod
    def _target(runs: list[dict]) -> np.ndarray:
        return np.mean([r["episode_accuracies"] for r in runs], axis=0)

    def section_problem(self, record):
        problem = super().section_problem(record)
        if problem:
            return problem
        p, runs, summary = record["protocol"], record["runs"], record["summary"]
        for run in runs:
            ref, where = run["reference"], f"seed {run['seed']} reference"
            accs = ref["episode_accuracies"]
            if ref["split"] != p["reference_split"]:
                return f"{where}: split {ref['split']} is not the protocol's reference split {p['reference_split']}"
            if ref["n"] != len(accs) or len(accs) != p["test_episodes"]:
                return f"{where}: n={ref['n']}, {len(accs)} episodes scored, the protocol has {p['test_episodes']}"
            if not math.isclose(ref["mean"], float(np.mean(accs)), abs_tol=MEAN_TOLERANCE):
                return f"{where}: recorded mean {ref['mean']:.6f} is not its episodes' ({np.mean(accs):.6f})"
            problem = interval_problem(f"{where} ci95", ref["ci95"], accs)
            if problem:
                return problem
        reference = np.mean([r["reference"]["episode_accuracies"] for r in runs], axis=0)
        mean = float(np.mean([r["reference"]["mean"] for r in runs]))
        if not math.isclose(summary["reference_mean"], mean, abs_tol=MEAN_TOLERANCE):
            return f"summary reference_mean {summary['reference_mean']:.6f} is not its seeds' ({mean:.6f})"
        return interval_problem("reference_ci95", summary["reference_ci95"], reference) or interval_problem(
            "drop_ci95", summary["drop_ci95"], reference - self._target(runs)
        )

    # --- verification: the target episodes (units 0..n-1) and the reference's (units n..2n-1) ------------
    def prepare_to_verify(self, protocol, record, device, data_dir):
        return self.training().prepare(protocol, device, record["protocol"]["test_episodes"], data_dir)

    def scored_on_problem(self, record, data):
        problem = super().scored_on_problem(record, data)
        p = record["protocol"]
        if problem is None and data.reference_fingerprint != p["reference_fingerprint"]:
            problem = (
                f"the record's reference_fingerprint {p['reference_fingerprint'][:12]}... is not that of "
                f"{p['name']} v{p['version']}'s reference episodes ({data.reference_fingerprint[:12]}...)"
            )
        return problem

    def recorded_units(self, run):
        return np.concatenate([super().recorded_units(run), run["reference"]["episode_accuracies"]])

    def rescore(self, model, data, indices, device):
        return self.training().rescore(model, data, indices, device)
