"""The record side of the continual protocols scored as an accuracy matrix: Split-Omniglot's task sequence
(continual learners) and the meta-training sequence (any few-shot method). R[i][j] is the accuracy on task j
after training on tasks 0..i; the record keeps R, a randomly initialised model's accuracy b on every task, and
GEM's ACC, BWT and FWT (benchmark.records.continual). The ranked units are the scores after the last task: each
task's accuracy (task sequence) or each fixed test episode's (meta-training sequence, the same count per task,
so their mean is ACC either way)."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from ..core.errors import BenchError
from ..protocols import Protocol
from ..records import mean_ci
from ..records.continual import gem_metrics
from ..records.io import MEAN_TOLERANCE
from ..run.config import RunConfig
from .base import PageSpec, Scored, Setting, Trained
from .continual_stream import (
    _FRACTION,
    _MATRIX,
    _NULLABLE_NUMBER,
    ContinualLearnerHooks,
    summary_mismatch,
)
from .episodic import _none_if_nan, summary_interval_problem

COLUMNS = (
    "Rank",
    "Method",
    "Backbone",
    "ACC (%)",
    "Paper (%)",
    "CI95 (%)",
    "BWT (%)",
    "FWT (%)",
    "Tasks",
    "Seeds",
    "Train time (s)",
    "Eval time (s)",
    "Device",
    "Date",
    "Kind",
    "Note",
    "Run",
)


def _sequence() -> ModuleType:
    from . import continual_sequence

    return continual_sequence


class ContinualMatrix(Setting):
    name = "continual"
    title = "Continual"
    order = 40
    units_field = "task_accuracies"  # the run's ranked units
    section_schema = {
        "protocol": {
            "type": "object",
            "required": ["continual", "tasks", "units_fingerprint"],
            "properties": {
                "tasks": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "units_fingerprint": {"type": "string"},
            },
        },
        "run": {
            "type": "object",
            "required": ["R", "b", "acc", "bwt", "fwt", "n", "ci95"],
            "properties": {
                "R": _MATRIX,
                "b": {"type": "array", "minItems": 1, "items": _FRACTION},
                "acc": _FRACTION,
                "bwt": {"type": "number", "minimum": -1, "maximum": 1},
                "fwt": {"type": ["number", "null"], "minimum": -1, "maximum": 1},
                "n": {"type": "integer", "minimum": 1},
                "ci95": _NULLABLE_NUMBER,
            },
        },
        "summary": {
            "type": "object",
            "required": ["ci95", "n_units", "acc", "bwt", "fwt", "R_mean"],
            "properties": {"ci95": _NULLABLE_NUMBER, "n_units": {"type": "integer", "minimum": 1}, "R_mean": _MATRIX},
        },
    }
    page = PageSpec(columns=COLUMNS, plots=("accuracy-matrix", "compute"), unit_label="task")

    # --- the record section ---------------------------------------------------------------------------
    def protocol_section(self, protocol, data):
        summary = protocol.summary()
        summary.pop("test_episodes", None)
        assert protocol.continual is not None
        return {
            **summary,
            "continual": protocol.continual.summary(),
            "tasks": list(data.task_names),
            "units_fingerprint": data.fingerprint,
            **self.extra_protocol(data),
        }

    def extra_protocol(self, data) -> dict:
        return {"task_classes": [int(n) for n in data.task_classes]}

    def run_section(self, scored: Scored):
        ci = mean_ci(scored.units)
        m = gem_metrics(scored.extra["R"], scored.extra["b"])
        return {
            self.units_field: [float(a) for a in scored.units],
            "mean": ci.mean,
            "ci95": _none_if_nan(ci.ci95),
            "n": ci.n,
            "acc": m.acc,
            "bwt": m.bwt,
            "fwt": m.fwt,
        }

    def summary_section(self, runs):
        per_unit = np.mean([r[self.units_field] for r in runs], axis=0)
        seed_means = [r["mean"] for r in runs]

        def over_seeds(key: str) -> tuple[float | None, float | None]:
            values = [r[key] for r in runs if r[key] is not None]
            if not values:
                return None, None
            ci = mean_ci(values)
            return ci.mean, _none_if_nan(ci.ci95)

        (acc, acc_ci), (bwt, bwt_ci), (fwt, fwt_ci) = (over_seeds(k) for k in ("acc", "bwt", "fwt"))
        return {
            "mean": float(np.mean(seed_means)),
            "ci95": _none_if_nan(mean_ci(per_unit).ci95),
            "n_units": len(per_unit),
            "n_seeds": len(runs),
            "seed_ci95": _none_if_nan(mean_ci(seed_means).ci95),
            "acc": acc,
            "bwt": bwt,
            "fwt": fwt,
            "acc_seed_ci95": acc_ci,
            "bwt_seed_ci95": bwt_ci,
            "fwt_seed_ci95": fwt_ci,
            "R_mean": np.mean([r["R"] for r in runs], axis=0).tolist(),
        }

    def units_per_task(self, record: dict) -> int:
        return 1

    def section_problem(self, record):
        t = len(record["protocol"]["tasks"])
        per = self.units_per_task(record)
        for run in record["runs"]:
            s = run["seed"]
            r, units = np.asarray(run["R"], dtype=np.float64), run[self.units_field]
            if r.shape != (t, t) or len(run["b"]) != t:
                return f"seed {s}: R is {r.shape} and b has {len(run['b'])} entries; the protocol has {t} tasks"
            if len(units) != t * per or run["n"] != len(units):
                return f"seed {s}: {len(units)} units (n={run['n']}), expected {t} tasks x {per}"
            final = np.asarray(units, dtype=np.float64).reshape(t, per).mean(axis=1)
            if not np.allclose(final, r[-1], atol=MEAN_TOLERANCE):
                return f"seed {s}: the last row of R is not the units' per-task accuracy"
            m = gem_metrics(r, run["b"])
            for key, want in (("acc", m.acc), ("bwt", m.bwt), ("fwt", m.fwt)):
                got = run[key]
                if (got is None) != (want is None) or (
                    want is not None and not math.isclose(got, want, abs_tol=MEAN_TOLERANCE)
                ):
                    return f"seed {s}: recorded {key} {got} is not its matrix's ({want})"
            if not math.isclose(run["mean"], float(np.mean(units)), abs_tol=MEAN_TOLERANCE):
                return f"seed {s}: recorded mean {run['mean']:.6f} is not its units' ({np.mean(units):.6f})"
        summary = record["summary"]
        problem = summary_mismatch(summary, self.summary_section(record["runs"]), ("acc", "bwt", "fwt", "R_mean"))
        if problem:
            return problem
        if summary["n_units"] != t * per:
            return f"summary n_units={summary['n_units']}, expected {t * per}"
        return summary_interval_problem(summary, self.units(record), record["runs"])

    # --- the paired statistic ------------------------------------------------------------------------
    def units(self, record):
        return np.asarray([r[self.units_field] for r in record["runs"]], dtype=np.float64).mean(axis=0)

    def pairing_key(self, record):
        p = record["protocol"]
        return (p["version"], p["units_fingerprint"], len(p["tasks"]), record["summary"]["n_units"])

    def seed_metrics(self, record):
        """ACC and BWT per seed: forgetting is compared over seeds (the same task order, different training)."""
        return {key.upper(): {r["seed"]: r[key] for r in record["runs"]} for key in ("acc", "bwt")}

    def scored_on_problem(self, record, data):
        p = record["protocol"]
        if data.fingerprint != p["units_fingerprint"]:
            return (
                f"the record's units_fingerprint {p['units_fingerprint'][:12]}... is not that of {p['name']} "
                f"v{p['version']} here ({data.fingerprint[:12]}...)"
            )
        return None

    def recorded_units(self, run):
        return np.asarray(run[self.units_field], dtype=np.float64)


class ContinualTasks(ContinualLearnerHooks, ContinualMatrix):
    description = "Learn a sequence of tasks (alphabets) one after another; the accuracy matrix and ACC/BWT/FWT."
    unit = "task"

    def supports(self, protocol: Protocol) -> str | None:
        c = protocol.continual
        if c is None or c.kind != "tasks" or len(protocol.stages) < 2:
            return "a task-sequence protocol has a pre-training stage and at least one task"
        return None

    def prepare(self, protocol, device, cfg, shared):
        return self.training().prepare_tasks(protocol, device, cfg, shared)

    def score(self, model, data, device, progress=True) -> Scored:
        return self.training().score_tasks(model, data, device, progress)

    def prepare_to_verify(self, protocol, record, device, data_dir):
        cfg = RunConfig(record["method"]["name"], (protocol.name,), data_dir=data_dir, progress=False)
        return self.training().prepare_tasks(protocol, device, cfg, {})

    def rescore(self, model, data, indices, device):
        """The whole sequence is replayed from the pre-trained checkpoint; the asked tasks' final accuracies."""
        return self.training().score_tasks(model, data, device, progress=False).units[indices]

    def verify_tolerance(self, record):
        return 0.02, 0.01


class MetaSequence(ContinualMatrix):
    description = "Meta-train on groups of classes one after another; few-shot accuracy on every group after each."
    unit = "test episode"
    units_field = "episode_accuracies"
    page = PageSpec(columns=COLUMNS, plots=("accuracy-matrix", "compute"), unit_label="test episode")

    def supports(self, protocol: Protocol) -> str | None:
        c = protocol.continual
        if c is None or c.kind != "meta-sequence" or protocol.episode is None:
            return "a meta-training sequence is episodic, with one stage per group"
        return None

    def check_method(self, cls, hp, protocol):
        if getattr(cls, "training_data", None) not in ("episodes", "batches"):
            raise BenchError(f"{cls.name} is not a few-shot method; {protocol.name} meta-trains few-shot methods")
        if cls.training_data == "episodes":
            cls.training_episodes(hp, protocol)

    def prepare(self, protocol, device, cfg, shared):
        return _sequence().prepare(protocol, device, cfg, shared)

    def build_model(self, cls, data, hp):
        return _sequence().build_model(cls, data, hp)

    def train(self, model, data, cfg, steps, seed, device) -> Trained:
        return _sequence().train(model, data, cfg, steps, seed, device)

    def score(self, model, data, device, progress=True) -> Scored:
        return _sequence().score(model, data, device, progress)

    def extra_protocol(self, data) -> dict:
        return {"episodes_per_task": data.episodes_per_task}

    def units_per_task(self, record):
        return record["protocol"]["episodes_per_task"]

    def prepare_to_verify(self, protocol, record, device, data_dir):
        p = record["protocol"]
        cfg = RunConfig(
            record["method"]["name"],
            (protocol.name,),
            episodes=p["episodes_per_task"],
            data_dir=data_dir,
            progress=False,
        )
        return _sequence().prepare(protocol, device, cfg, {})

    def rescore(self, model, data, indices, device):
        return _sequence().rescore(model, data, indices, device)

    def verify_tolerance(self, record):
        nq = record["protocol"]["ways"] * record["protocol"]["queries"]
        return 1 / nq + 1e-9, 0.5 / nq
