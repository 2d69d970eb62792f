"""What the settings that classify every image of a fixed test set share (domain generalisation's PACS
protocols, the noisy-label protocols): the record keeps each test image's correctness as a compact 0/1
string with a Wilson interval, the summary the interval over images and over seeds, and records are
compared and ranked image by image. A setting built on it adds its own protocol, run and summary fields
(`image_schema`) and checks (`summary_problem`), and its own training side (`prepare`, `train`, `score`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..records import mean_ci
from ..records.io import MEAN_TOLERANCE
from .base import Scored, Setting
from .episodic import _none_if_nan, interval_problem, summary_interval_problem

RANK_NOTE = (
    "Ranked by the two-sided Wilcoxon signed-rank test on per-image correctness (averaged over seeds). With "
    "one seed every difference is -1, 0 or +1, and the test reduces to McNemar's test on the images exactly "
    "one of the two methods gets right (normal approximation, no continuity correction)."
)
NULLABLE_NUMBER = {"type": ["number", "null"]}
FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
# the page's table for settings scored image by image (domain generalisation's classification, noisy labels)
IMAGE_COLUMNS = (
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
)


def correctness(run: dict) -> np.ndarray:
    """A run's per-image correctness (0/1) from its compact string form."""
    return np.frombuffer(run["correct"].encode("ascii"), dtype=np.uint8).astype(np.float64) - ord("0")


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials: honest near 0 and 1, where the normal one is not."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _part(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def image_schema(
    protocol: tuple[list[str], dict[str, Any]],
    run: tuple[list[str], dict[str, Any]],
    summary: tuple[list[str], dict[str, Any]],
) -> dict[str, dict]:
    """A setting's section schema: the fields every image-classification record has, plus the setting's own
    (required names, properties) for each part."""
    fixed = ["classes", "image_size", "test_split", "test_images", "images_fingerprint", "selection_rule"]
    return {
        "protocol": _part(
            [*fixed, *protocol[0]],
            {
                "classes": {"type": "integer", "minimum": 2},
                "image_size": {"type": "integer", "minimum": 1},
                "test_images": {"type": "integer", "minimum": 1},
                "images_fingerprint": {"type": "string"},
                **protocol[1],
            },
        ),
        "run": _part(
            ["correct", "n", "wilson95", "selection", *run[0]],
            {
                "correct": {"type": "string", "pattern": "^[01]+$"},
                "n": {"type": "integer", "minimum": 1},
                "wilson95": {"type": "array", "items": FRACTION, "minItems": 2, "maxItems": 2},
                **run[1],
            },
        ),
        "summary": _part(
            ["ci95", "n_images", *summary[0]],
            {
                "ci95": NULLABLE_NUMBER,
                "n_images": {"type": "integer", "minimum": 1},
                "seed_ci95": NULLABLE_NUMBER,
                **summary[1],
            },
        ),
    }


class ImageClassification(Setting):
    """The record side of a setting scored on every image of a fixed test set (not registered itself)."""

    unit = "test image"
    rank_test = "two-sided Wilcoxon signed-rank test (McNemar's test for single-seed records)"

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
        }

    def summary_problem(self, record: dict) -> str | None:
        """A setting's own checks of its summary and runs beyond the images' (None when all is well)."""
        return None

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
        return self.summary_problem(record) or summary_interval_problem(summary, self.units(record), record["runs"])

    # --- the paired statistic ------------------------------------------------------------------------
    def units(self, record):
        return np.mean([correctness(r) for r in record["runs"]], axis=0)

    def pairing_key(self, record):
        p = record["protocol"]
        return (p["version"], p["images_fingerprint"], p["test_images"])

    # --- verification --------------------------------------------------------------------------------
    def scored_on_problem(self, record, data):
        p = record["protocol"]
        if data.images_fingerprint != p["images_fingerprint"]:
            return (
                f"the record's images_fingerprint {p['images_fingerprint'][:12]}... is not that of {p['name']} "
                f"v{p['version']}'s {len(data.test.images)} test images here ({data.images_fingerprint[:12]}...)"
            )
        return None

    def recorded_units(self, run):
        return correctness(run)

    def rescore(self, model, data, indices, device):
        from .domains_training import correct  # torch: loaded when a record is verified, not when it is read

        return correct(model, data.test, device, rows=indices)

    def verify_tolerance(self, record):
        """Any one image may flip (float differences across devices move images on a decision boundary),
        but no more than half a percent of them."""
        return 1.0 + 1e-9, 0.005
