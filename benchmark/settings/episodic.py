"""Few-shot and cross-domain few-shot: meta-train on one split, score fixed N-way K-shot test episodes.

Training draws seeded episodes (or plain class batches, for pre-training methods) on the device.
Where the protocol defines a validation split, the model kept is the one that scores best on fixed
validation episodes, checked `val_checks` times during training and once at its end (the record's
`selection` says which step won); otherwise it is the model at the end of training.
The unit of scoring and pairing is the test episode.
"""

from __future__ import annotations

import math

import numpy as np

from ..protocols import Protocol
from ..records import mean_ci
from ..records.io import MEAN_TOLERANCE
from .base import PageSpec, Scored, Setting, register_setting

_NULLABLE_NUMBER = {"type": ["number", "null"]}


class Episodic(Setting):
    torch_side = "episodic_training"
    unit = "test episode"
    section_schema = {
        "protocol": {
            "type": "object",
            "required": [
                "ways",
                "shots",
                "queries",
                "image_size",
                "test_episodes",
                "test_split",
                "episodes_fingerprint",
            ],
            "properties": {
                "ways": {"type": "integer", "minimum": 2},
                "shots": {"type": "integer", "minimum": 1},
                "queries": {"type": "integer", "minimum": 1},
                "image_size": {"type": "integer", "minimum": 1},
                "test_episodes": {"type": "integer", "minimum": 1},
                "test_split": {"type": "string"},
                "episodes_fingerprint": {"type": "string"},
            },
        },
        "run": {
            "type": "object",
            "required": ["episode_accuracies", "ci95", "n"],
            "properties": {
                "selection": {"type": "object", "properties": {"rule": {"enum": ["final", "best-val"]}}},
                "episode_accuracies": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "ci95": _NULLABLE_NUMBER,
                "n": {"type": "integer", "minimum": 1},
                # what the method reported about its training (MetaLearner.record_extra), e.g. meta-kd's teacher
                "method_extra": {"type": "object"},
            },
        },
        "summary": {
            "type": "object",
            "required": ["ci95", "n_episodes"],
            "properties": {
                "ci95": _NULLABLE_NUMBER,
                "n_episodes": {"type": "integer", "minimum": 1},
                "seed_ci95": _NULLABLE_NUMBER,
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
            "Mean (%)",
            "CI95 (%)",
            "Seed CI95 (%)",
            "Episodes",
            "Seeds",
            "Train time (s)",
            "Eval time (s)",
            "Selection",
            "Device",
            "Date",
            "Kind",
            "Note",
            "Run",
        ),
        plots=("shots", "compute", "unit-histogram"),
        unit_label="test episode",
    )

    def supports(self, protocol: Protocol) -> str | None:
        return None if protocol.is_single_stage else "it has several stages; episodic settings train one"

    def training_key(self, p: Protocol) -> tuple:
        return (p.train, p.val, p.image_size, p.channels, p.episode_spec, p.train_steps, p.family)

    def check_method(self, cls, hp, protocol):
        if cls.training_data == "episodes":
            cls.training_episodes(hp, protocol)  # a bad combination fails here, before any data is loaded

    def prepare(self, protocol, device, cfg, shared):
        return self.training().prepare_run(
            protocol,
            device,
            cfg.episodes,
            cfg.data_dir,
            shared,
            val_episodes=cfg.val_episodes if cfg.select == "auto" else 0,
        )

    # --- the record section ---------------------------------------------------------------------------
    def protocol_section(self, protocol, data):
        return {
            **protocol.summary(),
            "test_episodes": len(data.episodes),
            "episodes_fingerprint": data.episodes.fingerprint,
        }

    def run_section(self, scored: Scored):
        ci = mean_ci(scored.units)
        return {
            "episode_accuracies": [float(a) for a in scored.units],
            "mean": ci.mean,
            "ci95": _none_if_nan(ci.ci95),
            "n": ci.n,
        }

    def summary_section(self, runs):
        per_episode = np.mean([r["episode_accuracies"] for r in runs], axis=0)
        seed_means = [r["mean"] for r in runs]
        return {
            "mean": float(np.mean(seed_means)),
            "ci95": _none_if_nan(mean_ci(per_episode).ci95),
            "n_episodes": len(per_episode),
            "n_seeds": len(runs),
            "seed_ci95": _none_if_nan(mean_ci(seed_means).ci95),
        }

    def section_problem(self, record):
        for run in record["runs"]:
            accs = run["episode_accuracies"]
            if run["n"] != len(accs):
                return f"seed {run['seed']}: n={run['n']} but {len(accs)} episode accuracies"
            if not math.isclose(run["mean"], sum(accs) / len(accs), abs_tol=MEAN_TOLERANCE):
                return (
                    f"seed {run['seed']}: recorded mean {run['mean']:.6f} does not match its episode "
                    f"accuracies ({sum(accs) / len(accs):.6f})"
                )
        counts = {len(r["episode_accuracies"]) for r in record["runs"]}
        if len(counts) != 1:
            return f"seeds were evaluated on different numbers of episodes ({sorted(counts)})"
        n = counts.pop()
        summary, protocol = record["summary"], record["protocol"]
        if summary["n_episodes"] != n:
            return f"summary n_episodes={summary['n_episodes']} but each seed has {n} episode accuracies"
        if protocol["test_episodes"] != n:
            return f"protocol has {protocol['test_episodes']} test episodes but {n} were evaluated"
        return summary_interval_problem(summary, self.units(record), record["runs"])

    # --- the paired statistic ------------------------------------------------------------------------
    def units(self, record):
        return np.asarray([r["episode_accuracies"] for r in record["runs"]], dtype=np.float64).mean(axis=0)

    def pairing_key(self, record):
        p = record["protocol"]
        return (p["version"], p["episodes_fingerprint"], record["summary"]["n_episodes"])

    # --- verification --------------------------------------------------------------------------------
    def prepare_to_verify(self, protocol, record, device, data_dir):
        return self.training().prepare_run(protocol, device, record["protocol"]["test_episodes"], data_dir)

    def scored_on_problem(self, record, data):
        p = record["protocol"]
        if data.episodes.fingerprint != p["episodes_fingerprint"]:
            return (
                f"the record's episodes_fingerprint {p['episodes_fingerprint'][:12]}... is not that of "
                f"{p['name']} v{p['version']}'s {len(data.episodes)} fixed test episodes "
                f"({data.episodes.fingerprint[:12]}...): it was not scored on the protocol's episodes"
            )
        return None

    def recorded_units(self, run):
        return np.asarray(run["episode_accuracies"], dtype=np.float64)

    def rescore(self, model, data, indices, device):
        return self.training().rescore(model, data, indices, device)

    def verify_tolerance(self, record):
        """One query may flip in an episode, half a query on average (float differences across devices)."""
        nq = record["protocol"]["ways"] * record["protocol"]["queries"]
        return 1 / nq + 1e-9, 0.5 / nq


# Two decimals of a percentage is what the page shows; a recorded interval that differs from the one
# its own accuracies give by less than that cannot mislead anyone, and tolerating it spares records
# whose writer rounded.
CI_TOLERANCE = 1e-4


def interval_problem(name: str, recorded: float | None, values) -> str | None:
    expected = mean_ci(values).ci95
    if recorded is None or (isinstance(recorded, float) and math.isnan(recorded)):
        return None if math.isnan(expected) else f"summary {name} is missing although it can be computed"
    if math.isnan(expected):
        return f"summary {name}={recorded} but a single value has no interval"
    if abs(recorded - expected) > CI_TOLERANCE:
        return f"summary {name}={recorded:.6f} does not match its accuracies ({expected:.6f})"
    return None


def summary_interval_problem(summary: dict, units, runs: list[dict]) -> str | None:
    """A summary's interval over its units, and over its seeds' means when it has one, against what they give."""
    problem = interval_problem("ci95", summary.get("ci95"), units)
    if problem or "seed_ci95" not in summary:
        return problem
    return interval_problem("seed_ci95", summary["seed_ci95"], [r["mean"] for r in runs])


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


class FewShot(Episodic):
    name = "few-shot"
    title = "Few-shot"
    order = 10
    description = "N-way K-shot classification of classes never seen in training, from the same dataset."


class CrossDomain(Episodic):
    name = "cross-domain"
    title = "Cross-domain"
    order = 20
    description = "Few-shot episodes from another dataset or domain than the one meta-trained on."


register_setting(FewShot())
register_setting(CrossDomain())
