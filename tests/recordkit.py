"""Hand-made result records for tests: valid by construction, checked by benchmark.records.validate and
by its setting's checks.

`make_record` builds a record from per-episode accuracies (one list per seed), filling in the
summary the same way the harness must (benchmark.records.mean_ci), so tests can state the exact
numbers they expect. `paired_accuracies` makes realistic, discrete episode accuracies for several
methods on shared episodes, and `write` files a record where the leaderboard looks for it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmark.records import mean_ci, record_path, validate, write_record
from benchmark.settings import check_record


def fingerprint(protocol: str, version: int = 1, salt: str = "") -> str:
    """Same protocol and version give the same fingerprint, as with real fixed test episodes."""
    return hashlib.sha256(f"{protocol}:v{version}:{salt}".encode()).hexdigest()


def _ci(values: Sequence[float]) -> float | None:
    ci = mean_ci(values).ci95
    return None if math.isnan(ci) else ci


def make_record(
    method: str,
    protocol: str,
    accuracies: Sequence[float] | Sequence[Sequence[float]],
    *,
    setting: str = "few-shot",
    seeds: Sequence[int] | None = None,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    image_size: int = 28,
    datasets: Sequence[str] | None = None,
    version: int = 1,
    episodes_fingerprint: str | None = None,
    backbone: str | None = "conv4",
    hparams: Mapping | None = None,
    kind: str = "evaluation",
    created: str = "2025-01-01T00:00:00+00:00",
    run_id: str | None = None,
    train_time_s: float = 60.0,
    eval_time_s: float = 5.0,
    device: Mapping | None = None,
    git_commit: str | None = "0123456789abcdef0123456789abcdef01234567",
    notes: str | None = None,
) -> dict:
    """A valid record; `accuracies` is one list of episode accuracies, or one list per seed."""
    per_seed = (
        [list(map(float, a)) for a in accuracies]
        if isinstance(accuracies[0], (list, tuple, np.ndarray))
        else [list(map(float, accuracies))]
    )
    seeds = list(seeds) if seeds is not None else list(range(len(per_seed)))
    if len(seeds) != len(per_seed):
        raise ValueError("one seed per list of accuracies")
    n = len(per_seed[0])
    runs = [
        {
            "seed": seed,
            "episode_accuracies": accs,
            "mean": float(np.mean(accs)),
            "ci95": _ci(accs),
            "n": len(accs),
            "train_steps": 1000,
            "train_time_s": train_time_s / len(per_seed),
            "eval_time_s": eval_time_s / len(per_seed),
            "checkpoint": None,
            "selection": {"rule": "final"},
        }
        for seed, accs in zip(seeds, per_seed)
    ]
    seed_means = [r["mean"] for r in runs]
    episode_means = np.mean(np.asarray(per_seed), axis=0)
    record = {
        "schema_version": 2,
        "run_id": run_id or re.sub(r"[^A-Za-z0-9_.-]", "_", f"{method}-{protocol}-{created[:10]}"),
        "created": created,
        "kind": kind,
        "setting": setting,
        "protocol": {
            "name": protocol,
            "version": version,
            "setting": setting,
            "ways": ways,
            "shots": shots,
            "queries": queries,
            "image_size": image_size,
            "datasets": list(datasets) if datasets is not None else [protocol.split("-")[0]],
            "test_split": "test",
            "test_episodes": n,
            "episodes_fingerprint": episodes_fingerprint or fingerprint(protocol, version),
        },
        "method": {"name": method, "backbone": backbone, "hparams": dict(hparams or {"lr": 0.001}), "recipe": None},
        "seeds": seeds,
        "runs": runs,
        "summary": {
            "mean": float(np.mean(seed_means)),
            "ci95": _ci(episode_means),
            "n_episodes": n,
            "n_seeds": len(runs),
            "seed_ci95": _ci(seed_means),
            "train_time_s": train_time_s,
            "eval_time_s": eval_time_s,
        },
        "device": dict(device or {"type": "cpu", "name": "test-cpu"}),
        "environment": {"python": "3.11", "torch": "2.3.0"},
        "code": {"git_commit": git_commit, "git_dirty": False},
        "data": {
            d: hashlib.sha256(d.encode()).hexdigest()[:16]
            for d in (datasets if datasets is not None else [protocol.split("-")[0]])
        },
    }
    if kind == "submission":
        record["method"]["source"] = {
            "file": f"{method}.py",
            "class": method,
            "sha256": hashlib.sha256(method.encode()).hexdigest(),
        }
    if notes:
        record["notes"] = notes
    validate(record)
    check_record(record)
    return record


def paired_accuracies(
    means: Mapping[str, float], n: int = 100, *, ways: int = 5, queries: int = 15, seed: int = 0, spread: float = 0.08
) -> dict[str, list[float]]:
    """Episode accuracies for several methods on the same episodes.

    Episodes differ in difficulty and every method feels that difficulty alike, which is what
    makes paired tests sharper than comparing intervals; accuracies are whole numbers of correct
    queries out of ways * queries, as a real evaluation produces.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, spread, size=n)
    total = ways * queries
    out = {}
    for name, mean in means.items():
        p = np.clip(mean + difficulty, 0.0, 1.0)
        out[name] = (rng.binomial(total, p) / total).tolist()
    return out


def write(results_dir: Path, record: dict) -> Path:
    return write_record(Path(results_dir), record)


def write_raw(results_dir: Path, record: dict) -> Path:
    """File a record without validating it: the way to plant a bad one."""
    path = record_path(Path(results_dir), record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return path


def tampered(record: dict, **summary_changes) -> dict:
    """A copy with its summary edited, as a hand-edited result file would be."""
    bad = copy.deepcopy(record)
    bad["summary"].update(summary_changes)
    return bad


DEMO_BAD = "few-shot/omniglot-5w1s/Edited/edited-run.json"


def populate_demo(results: Path) -> None:
    """A small leaderboard whose ranks are known, plus one planted bad record (at DEMO_BAD).

    omniglot-5w1s: A clearly best, B one query worse on one episode (tied with A), C clearly
    worse (rank 2); a cross-domain protocol with two methods; nothing for continual; and a copy
    of A's record with its summary mean edited, which the leaderboard must leave out.
    """
    a = paired_accuracies({"A": 0.8}, n=60, seed=1)["A"]
    b = list(a)
    b[0] -= 1 / 75
    c = paired_accuracies({"C": 0.55}, n=60, seed=2)["C"]
    for method, accs in (("A", a), ("B", b), ("C", c)):
        write(results, make_record(method, "omniglot-5w1s", accs))
    cross = paired_accuracies({"ProtoNet": 0.45, "Baseline": 0.40}, n=40, seed=3)
    for method, accs in cross.items():
        write(
            results,
            make_record(
                method,
                "caltech101-to-pacs-sketch-5w1s",
                accs,
                setting="cross-domain",
                datasets=["caltech101", "pacs-sketch"],
                backbone="resnet12",
            ),
        )
    write_raw(results, tampered(make_record("Edited", "omniglot-5w1s", a, run_id="edited-run"), mean=0.99))
