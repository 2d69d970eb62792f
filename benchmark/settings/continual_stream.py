"""The record side of the continual stream protocol (OML's Omniglot stream): after pre-training, a learner
learns fixed streams of new classes one class at a time and is scored after each count of classes in the
protocol's checkpoints on the held-out images of every class seen so far (test accuracy) and on the images it
learned (retention). The unit of scoring and pairing is the stream: its test accuracy at the last checkpoint.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import BenchError
from ..protocols import Protocol
from ..records import mean_ci
from ..records.io import MEAN_TOLERANCE
from ..run.config import RunConfig
from .base import PageSpec, Scored, Setting, Trained
from .episodic import _none_if_nan, summary_interval_problem

_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_MATRIX = {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": _FRACTION}}


def check_continual_method(cls, protocol: Protocol) -> None:
    if getattr(cls, "training_data", None) != "continual":
        raise BenchError(
            f"{cls.name} is not a continual learner; {protocol.name} runs the continual methods (seq-finetune, "
            f"joint, er, oml, anml, mer, la-maml; `bench list` shows each). The few-shot methods run on "
            f"omniglot-meta-sequence-5w1s"
        )


def summary_mismatch(summary: dict, expected: dict, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` whose summary value is not what the runs give (numbers, lists or dicts of them)."""

    def same(a, b) -> bool:
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if a is None or b is None:
            return a is None and b is None
        try:
            return bool(
                np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), atol=1e-6, equal_nan=True)
            )
        except (TypeError, ValueError):  # ragged or non-numeric: not the shape the runs give
            return False

    for key in keys:
        if not same(summary.get(key), expected.get(key)):
            return f"summary {key} is not what its runs give"
    return None


def curve(values: np.ndarray) -> tuple[list[float], list[float | None]]:
    """Means and 95% half-widths over streams (rows), one per checkpoint (columns)."""
    cis = [mean_ci(values[:, c]) for c in range(values.shape[1])]
    return [ci.mean for ci in cis], [_none_if_nan(ci.ci95) for ci in cis]


class ContinualLearnerHooks(Setting):
    """The hooks shared by the parts whose methods are `ContinualLearner`s (a stream, a task sequence): the
    method check, the model and the batch pre-training stage before the continual phase."""

    torch_side = "continual_training"

    def check_method(self, cls, hp, protocol):
        check_continual_method(cls, protocol)

    def train(self, model, data, cfg, steps, seed, device) -> Trained:
        return self.training().pretrain(model, data, cfg, steps, seed, device)


class ContinualStream(ContinualLearnerHooks, Setting):
    name = "continual"
    title = "Continual"
    order = 40
    description = "Learn new classes one at a time from a stream; scored on every class seen so far."
    unit = "stream"
    section_schema = {
        "protocol": {
            "type": "object",
            "required": ["continual", "streams", "classes_per_stream", "stream_fingerprint", "checkpoints"],
            "properties": {
                "streams": {"type": "integer", "minimum": 1},
                "classes_per_stream": {"type": "integer", "minimum": 1},
                "classes_limit": {"type": ["integer", "null"]},
                "stream_fingerprint": {"type": "string"},
                "checkpoints": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1}},
            },
        },
        "run": {
            "type": "object",
            "required": ["stream_accuracies", "n", "ci95", "test_accuracy", "retention"],
            "properties": {
                "stream_accuracies": {"type": "array", "minItems": 1, "items": _FRACTION},
                "n": {"type": "integer", "minimum": 1},
                "ci95": _NULLABLE_NUMBER,
                "test_accuracy": _MATRIX,
                "retention": _MATRIX,
            },
        },
        "summary": {
            "type": "object",
            "required": ["ci95", "n_streams", "curve"],
            "properties": {
                "ci95": _NULLABLE_NUMBER,
                "n_streams": {"type": "integer", "minimum": 1},
                "seed_ci95": _NULLABLE_NUMBER,
                "curve": {
                    "type": "object",
                    "required": ["checkpoints", "test_mean", "test_ci95", "retention_mean", "retention_ci95"],
                },
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
            "Curve (%)",
            "Retention (%)",
            "Streams",
            "Classes",
            "Seeds",
            "Train time (s)",
            "Eval time (s)",
            "Device",
            "Date",
            "Kind",
            "Note",
            "Run",
        ),
        plots=("stream-curves", "compute"),
        unit_label="stream",
    )

    def supports(self, protocol: Protocol) -> str | None:
        c = protocol.continual
        if c is None or c.kind != "stream" or len(protocol.stages) != 2 or len(protocol.stages[1].test) != 2:
            return "a stream protocol has a pre-training stage and a stream stage with learned and held-out images"
        return None

    def prepare(self, protocol, device, cfg, shared):
        return self.training().prepare_stream(protocol, device, cfg, shared)

    def score(self, model, data, device, progress=True) -> Scored:
        return self.training().score_streams(model, data, device, progress)

    # --- the record section ---------------------------------------------------------------------------
    def protocol_section(self, protocol, data):
        summary = protocol.summary()
        summary.pop("test_episodes", None)
        assert protocol.continual is not None
        return {
            **summary,
            "continual": protocol.continual.summary(),
            "streams": len(data.orders),
            "classes_per_stream": data.classes_per_stream,
            "classes_limit": data.classes_limit,
            "checkpoints": list(data.checkpoints),
            "stream_fingerprint": data.fingerprint,
        }

    def run_section(self, scored: Scored):
        ci = mean_ci(scored.units)
        return {
            "stream_accuracies": [float(a) for a in scored.units],
            "mean": ci.mean,
            "ci95": _none_if_nan(ci.ci95),
            "n": ci.n,
        }

    def summary_section(self, runs):
        per_stream = np.mean([r["stream_accuracies"] for r in runs], axis=0)
        seed_means = [r["mean"] for r in runs]
        test = np.mean([r["test_accuracy"] for r in runs], axis=0)
        kept = np.mean([r["retention"] for r in runs], axis=0)
        test_mean, test_ci = curve(test)
        kept_mean, kept_ci = curve(kept)
        return {
            "mean": float(np.mean(seed_means)),
            "ci95": _none_if_nan(mean_ci(per_stream).ci95),
            "n_streams": len(per_stream),
            "n_seeds": len(runs),
            "seed_ci95": _none_if_nan(mean_ci(seed_means).ci95),
            "curve": {
                "checkpoints": list(runs[0]["checkpoints"]),
                "test_mean": test_mean,
                "test_ci95": test_ci,
                "retention_mean": kept_mean,
                "retention_ci95": kept_ci,
            },
        }

    def section_problem(self, record):
        p = record["protocol"]
        n, k = p["streams"], len(p["checkpoints"])
        if p["checkpoints"][-1] != p["classes_per_stream"]:
            return f"the last checkpoint {p['checkpoints'][-1]} is not the stream's length {p['classes_per_stream']}"
        for run in record["runs"]:
            s = run["seed"]
            accs = run["stream_accuracies"]
            shapes = {np.shape(run["test_accuracy"]), np.shape(run["retention"])}
            if len(accs) != n or run["n"] != n or shapes != {(n, k)}:
                return f"seed {s}: expected {n} streams x {k} checkpoints, got {len(accs)} and shapes {sorted(shapes)}"
            if run.get("checkpoints") != p["checkpoints"]:
                return f"seed {s}: checkpoints {run.get('checkpoints')} are not the protocol's {p['checkpoints']}"
            last = [row[-1] for row in run["test_accuracy"]]
            if not np.allclose(accs, last, atol=MEAN_TOLERANCE):
                return f"seed {s}: stream accuracies are not the test accuracies at the last checkpoint"
            if not math.isclose(run["mean"], float(np.mean(accs)), abs_tol=MEAN_TOLERANCE):
                return f"seed {s}: recorded mean {run['mean']:.6f} is not its streams' ({np.mean(accs):.6f})"
        summary = record["summary"]
        problem = summary_mismatch(summary, self.summary_section(record["runs"]), ("curve",))
        if problem:
            return problem
        if summary["n_streams"] != n:
            return f"summary n_streams={summary['n_streams']} but the protocol section has {n} streams"
        return summary_interval_problem(summary, self.units(record), record["runs"])

    # --- the paired statistic ------------------------------------------------------------------------
    def units(self, record):
        return np.asarray([r["stream_accuracies"] for r in record["runs"]], dtype=np.float64).mean(axis=0)

    def pairing_key(self, record):
        p = record["protocol"]
        return (p["version"], p["stream_fingerprint"], p["streams"], p["classes_per_stream"])

    # --- verification: each stream is replayed from the pre-trained checkpoint --------------------------------
    def prepare_to_verify(self, protocol, record, device, data_dir):
        p = record["protocol"]
        cfg = RunConfig(
            record["method"]["name"],
            (protocol.name,),
            episodes=p["streams"],
            max_classes=p["classes_limit"],
            data_dir=data_dir,
            progress=False,
        )
        return self.training().prepare_stream(protocol, device, cfg, {})

    def scored_on_problem(self, record, data):
        p = record["protocol"]
        if data.fingerprint != p["stream_fingerprint"]:
            return (
                f"the record's stream_fingerprint {p['stream_fingerprint'][:12]}... is not that of {p['name']} "
                f"v{p['version']}'s {len(data.orders)} streams here ({data.fingerprint[:12]}...)"
            )
        return None

    def recorded_units(self, run):
        return np.asarray(run["stream_accuracies"], dtype=np.float64)

    def rescore(self, model, data, indices, device):
        return self.training().score_streams(model, data, device, progress=False, streams=indices).units

    def verify_tolerance(self, record):
        """A replayed stream is the same computation; on another device float rounding can move a few of its
        thousands of online updates' predictions: two points on a stream, one on average."""
        return 0.02, 0.01
