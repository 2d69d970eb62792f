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
from types import ModuleType

import numpy as np

from ..core.errors import BenchError
from ..protocols import Protocol
from ..records import mean_ci
from ..records.io import MEAN_TOLERANCE
from ..run.config import RunConfig
from .base import PageSpec, Scored, Setting, Trained
from .domain_rules import ORACLE_RULE, SELECTION_RULE
from .episodic import _none_if_nan, interval_problem, summary_interval_problem

RANK_NOTE = (
    "Ranked by the two-sided Wilcoxon signed-rank test on per-image correctness (averaged over seeds). With "
    "one seed every difference is -1, 0 or +1, and the test reduces to McNemar's test on the images exactly "
    "one of the two methods gets right (normal approximation, no continuity correction)."
)


def _training() -> ModuleType:
    """The torch side, loaded when a run starts: reading records and the page never need it."""
    from . import domains_training

    return domains_training


def correctness(run: dict) -> np.ndarray:
    """A run's per-image correctness (0/1) from its compact string form."""
    return np.frombuffer(run["correct"].encode("ascii"), dtype=np.uint8).astype(np.float64) - ord("0")


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials: honest near 0 and 1, where the normal one is not."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


_NULLABLE_NUMBER = {"type": ["number", "null"]}
_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}


class DomainClassification(Setting):
    """The classification protocols of domain generalisation (PACS); the registered setting
    (domain_setting.DomainGeneralisation) hands them to this part."""

    name = "domain-generalisation"
    title = "Domain generalisation"
    order = 30
    description = "Train on several domains, classify every image of a domain never seen in training."
    unit = "test image"
    rank_test = "two-sided Wilcoxon signed-rank test (McNemar's test for single-seed records)"
    section_schema = {
        "protocol": {
            "type": "object",
            "required": [
                "classes",
                "image_size",
                "source_domains",
                "target_domain",
                "test_split",
                "val_split",
                "test_images",
                "images_fingerprint",
                "selection_rule",
            ],
            "properties": {
                "classes": {"type": "integer", "minimum": 2},
                "image_size": {"type": "integer", "minimum": 1},
                "source_domains": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "target_domain": {"type": "string"},
                "test_images": {"type": "integer", "minimum": 1},
                "images_fingerprint": {"type": "string"},
                "selection_rule": {"const": SELECTION_RULE},
            },
        },
        "run": {
            "type": "object",
            "required": ["correct", "n", "wilson95", "selection"],
            "properties": {
                "correct": {"type": "string", "pattern": "^[01]+$"},
                "n": {"type": "integer", "minimum": 1},
                "wilson95": {"type": "array", "items": _FRACTION, "minItems": 2, "maxItems": 2},
                "selection": {
                    "type": "object",
                    "required": ["rule", "oracle"],
                    "properties": {
                        "rule": {"const": SELECTION_RULE},
                        "oracle": {
                            "type": "object",
                            "required": ["rule", "chosen_step", "accuracy", "images"],
                            "properties": {"rule": {"const": ORACLE_RULE}, "accuracy": _FRACTION},
                        },
                    },
                },
            },
        },
        "summary": {
            "type": "object",
            "required": ["ci95", "n_images", "oracle_mean"],
            "properties": {
                "ci95": _NULLABLE_NUMBER,
                "n_images": {"type": "integer", "minimum": 1},
                "seed_ci95": _NULLABLE_NUMBER,
                "oracle_mean": _FRACTION,
            },
        },
    }
    page = PageSpec(
        columns=(
            "Rank",
            "Method",
            "Backbone",
            "Accuracy (%)",
            "Paper (%)",
            "CI95 (%)",
            "Seed CI95 (%)",
            "Images",
            "Seeds",
            "Train time (s)",
            "Selection",
            "Device",
            "Date",
            "Kind",
            "Note",
            "Run",
        ),
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

    def prepare(self, protocol, device, cfg, shared):
        return _training().prepare(protocol, device, cfg, shared)

    def build_model(self, cls, data, hp):
        return _training().build_model(cls, data, hp)

    def train(self, model, data, cfg, steps, seed, device) -> Trained:
        return _training().train(model, data, cfg, steps, seed, device)

    def score(self, model, data, device, progress=True) -> Scored:
        return _training().score(model, data, device, progress)

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

    def run_section(self, scored: Scored):
        correct = scored.units.astype(np.uint8)
        n, k = len(correct), int(correct.sum())
        return {
            "correct": (correct + ord("0")).tobytes().decode("ascii"),
            "mean": k / n,
            "ci95": _none_if_nan(mean_ci(scored.units).ci95),  # the normal interval, as the page shows it
            "n": n,
            "wilson95": list(wilson(k, n)),
        }

    def summary_section(self, runs):
        per_image = np.mean([correctness(r) for r in runs], axis=0)
        seed_means = [r["mean"] for r in runs]
        return {
            "mean": float(np.mean(seed_means)),
            "ci95": _none_if_nan(mean_ci(per_image).ci95),
            "n_images": len(per_image),
            "n_seeds": len(runs),
            "seed_ci95": _none_if_nan(mean_ci(seed_means).ci95),
            "oracle_mean": float(np.mean([r["selection"]["oracle"]["accuracy"] for r in runs])),
        }

    def section_problem(self, record):
        n_test = record["protocol"]["test_images"]
        for run in record["runs"]:
            c = correctness(run)
            if run["n"] != len(c) or len(c) != n_test:
                return f"seed {run['seed']}: n={run['n']}, {len(c)} images scored, the protocol has {n_test}"
            if not math.isclose(run["mean"], c.mean(), abs_tol=MEAN_TOLERANCE):
                return f"seed {run['seed']}: recorded mean {run['mean']:.6f} is not its images' ({c.mean():.6f})"
            lo, hi = wilson(int(c.sum()), len(c))
            if not (
                math.isclose(run["wilson95"][0], lo, abs_tol=1e-6)
                and math.isclose(run["wilson95"][1], hi, abs_tol=1e-6)
            ):
                return f"seed {run['seed']}: wilson95 {run['wilson95']} is not its images' ({lo:.6f}, {hi:.6f})"
            if "ci95" in run:
                problem = interval_problem(f"seed {run['seed']} ci95", run["ci95"], c)
                if problem:
                    return problem
        summary = record["summary"]
        if summary["n_images"] != n_test:
            return f"summary n_images={summary['n_images']} but the protocol has {n_test} test images"
        oracle = np.mean([r["selection"]["oracle"]["accuracy"] for r in record["runs"]])
        if not math.isclose(summary["oracle_mean"], oracle, abs_tol=MEAN_TOLERANCE):
            return f"summary oracle_mean {summary['oracle_mean']:.6f} is not its seeds' ({oracle:.6f})"
        return summary_interval_problem(summary, self.units(record), record["runs"])

    # --- the paired statistic ------------------------------------------------------------------------
    def units(self, record):
        return np.mean([correctness(r) for r in record["runs"]], axis=0)

    def pairing_key(self, record):
        p = record["protocol"]
        return (p["version"], p["images_fingerprint"], p["test_images"])

    # --- verification --------------------------------------------------------------------------------
    def prepare_to_verify(self, protocol, record, device, data_dir):
        cfg = RunConfig(record["method"]["name"], (protocol.name,), data_dir=data_dir, progress=False)
        return _training().prepare(protocol, device, cfg)

    def scored_on_problem(self, record, data):
        p = record["protocol"]
        if data.images_fingerprint != p["images_fingerprint"]:
            return (
                f"the record's images_fingerprint {p['images_fingerprint'][:12]}... is not that of {p['name']} "
                f"v{p['version']}'s {len(data.test.images)} target images here ({data.images_fingerprint[:12]}...)"
            )
        return None

    def recorded_units(self, run):
        return correctness(run)

    def rescore(self, model, data, indices, device):
        return _training().correct(model, data.test, device, rows=indices)

    def verify_tolerance(self, record):
        """Any one image may flip (float differences across devices move images on a decision boundary),
        but no more than half a percent of them."""
        return 1.0 + 1e-9, 0.005
