"""Noisy labels: train a classifier on images whose labels are partly corrupted, with a small clean meta set,
and score it on every image of a clean test set (Ren et al. 2018, Shu et al. 2019).

The protocols (benchmark.protocols.noisy) fix which training labels are corrupted as a pure function of the
protocol's name and version. The record keeps each test image's correctness (the shared image-classification
record, images.py: Wilson interval, seed-level interval, pairing and ranking image by image) and, per seed,
how the trained method weighs training examples whose label was corrupted against those whose label is right
(`label_weights`: each training image's weight relative to its batch's mean, as counts per weight bin for the
corrupted and the clean labels, and the two means), which the page plots.

Model selection: the final model (rule "final"), scored once. No held-out clean data is left to select on: the
clean meta set is training data for every method (erm trains on it, l2rw and mw-net take their meta-gradients
on it), so its accuracy says little about the test set, and choosing the step by it would give erm an early
stop against memorising noisy labels that it does not have by itself. The test set is never looked at before
scoring.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import BenchError
from ..protocols import Protocol
from ..run.config import RunConfig
from .base import PageSpec, register_setting
from .images import FRACTION, IMAGE_COLUMNS, ImageClassification, image_schema
from .noisy_rules import EDGES, SELECTION_RULE

_COUNTS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": len(EDGES), "maxItems": len(EDGES)}
_COUNT = {"type": "integer", "minimum": 0}


class NoisyLabels(ImageClassification):
    torch_side = "noisy_training"
    name = "noisy-labels"
    title = "Noisy labels"
    order = 50
    description = (
        "Train on corrupted labels with a small clean meta set, classify every image of a clean test set; "
        "sample reweighting (L2RW, Meta-Weight-Net) against ERM."
    )
    section_schema = image_schema(
        protocol=(
            ["meta_split", "train_images", "meta_images", "corrupted_labels", "labels_fingerprint", "noise"],
            {
                "selection_rule": {"const": SELECTION_RULE},
                "train_images": {"type": "integer", "minimum": 1},
                "meta_images": {"type": "integer", "minimum": 1},
                "corrupted_labels": _COUNT,
                "labels_fingerprint": {"type": "string"},
                "noise": {"type": "object", "required": ["kind", "rate"]},
            },
        ),
        run=(
            ["label_weights"],
            {
                "selection": {"type": "object", "properties": {"rule": {"const": SELECTION_RULE}}},
                "label_weights": {
                    "type": "object",
                    "required": ["edges", "corrupted", "clean", "mean_corrupted", "mean_clean"],
                    "properties": {
                        "edges": {"const": list(EDGES)},
                        "corrupted": _COUNTS,
                        "clean": _COUNTS,
                        "mean_corrupted": {"type": ["number", "null"], "minimum": 0},
                        "mean_clean": {"type": ["number", "null"], "minimum": 0},
                    },
                },
            },
        ),
        summary=(["weight_corrupted", "weight_clean"], {"weight_corrupted": FRACTION, "weight_clean": FRACTION}),
    )
    page = PageSpec(
        columns=IMAGE_COLUMNS,
        plots=("label-weights", "compute"),
        unit_label="test image",
    )

    def supports(self, protocol: Protocol) -> str | None:
        if protocol.noise is None or protocol.episode is not None or not protocol.is_single_stage:
            return "noisy-label protocols classify (no episodes) in one stage, with label noise on the training split"
        if protocol.val is None:
            return "a noisy-label protocol needs its clean meta set as the validation split"
        return None

    def training_key(self, p: Protocol) -> tuple:
        return (p.name, p.version)  # each protocol corrupts its own labels: nothing is shared

    def check_method(self, cls, hp, protocol):
        if getattr(cls, "noisy_labels", None) not in ("meta", "pooled"):
            raise BenchError(
                f"{cls.name} does not learn from noisy labels; {protocol.name} needs a classifier that takes the "
                f"noisy-label batches (erm, l2rw or mw-net; `bench list` shows each method)"
            )

    # --- the record section ---------------------------------------------------------------------------
    def protocol_section(self, protocol, data):
        summary = protocol.summary()
        summary.pop("test_episodes", None)
        return {
            **summary,
            "classes": len(data.classes),
            "meta_split": protocol.val.label,
            "train_images": len(data.train.images),
            "meta_images": len(data.meta.images),
            "corrupted_labels": int(data.corrupted.sum()),
            "labels_fingerprint": data.labels_fingerprint,
            "test_images": len(data.test.images),
            "images_fingerprint": data.images_fingerprint,
            "selection_rule": SELECTION_RULE,
        }

    def summary_section(self, runs):
        return {
            **super().summary_section(runs),
            "weight_corrupted": _mean_share(runs, "corrupted"),
            "weight_clean": _mean_share(runs, "clean"),
        }

    def summary_problem(self, record):
        p = record["protocol"]
        corrupted, clean = p["corrupted_labels"], p["train_images"] - p["corrupted_labels"]
        for run in record["runs"]:
            w = run["label_weights"]
            if (sum(w["corrupted"]), sum(w["clean"])) != (corrupted, clean):
                return (
                    f"seed {run['seed']}: label_weights count {sum(w['corrupted'])} corrupted and {sum(w['clean'])} "
                    f"clean training images; the protocol has {corrupted} corrupted and {clean} clean"
                )
        for part in ("corrupted", "clean"):
            if not np.isclose(record["summary"][f"weight_{part}"], _mean_share(record["runs"], part), atol=1e-9):
                return f"summary weight_{part} is not its seeds' share of the total weight"
        return None

    def pairing_key(self, record):
        return (*super().pairing_key(record), record["protocol"]["labels_fingerprint"])

    # --- verification --------------------------------------------------------------------------------
    def prepare_to_verify(self, protocol, record, device, data_dir):
        cfg = RunConfig(record["method"]["name"], (protocol.name,), data_dir=data_dir, progress=False)
        return self.training().prepare(protocol, device, cfg)

    def scored_on_problem(self, record, data):
        if data.labels_fingerprint != record["protocol"]["labels_fingerprint"]:
            return f"the record's training labels are not {record['protocol']['name']}'s corrupted labels here"
        return super().scored_on_problem(record, data)


def _mean_share(runs: list[dict], part: str) -> float:
    """The share of the training images' total weight that falls on the corrupted (or clean) ones, from the
    bins' counts and the two means, averaged over seeds: 0.4 under uniform weighting at 40% noise."""
    shares = []
    for run in runs:
        w = run["label_weights"]
        totals = {k: (w[f"mean_{k}"] or 0.0) * sum(w[k]) for k in ("corrupted", "clean")}
        whole = totals["corrupted"] + totals["clean"]
        shares.append(totals[part] / whole if whole > 0 else 0.0)
    return float(np.mean(shares))


register_setting(NoisyLabels())
