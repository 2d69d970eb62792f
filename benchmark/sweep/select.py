"""Model selection over a sweep's trials, on the protocol's validation split and never on its test episodes.

For each method and protocol, the configuration kept is the one whose trials have the highest validation
accuracy averaged over its seeds (each seed's validation accuracy is that of the model its run kept, by the
run's own best-val rule); ties go to the lower configuration number. Only configurations with a finished
trial for every seed compete. The selected configuration's trials become one ordinary record in the results
folder, one run per seed (the CI over seed means), with a `sweep` section that names the rule, the trials it
came from and every candidate with its validation score.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BenchError
from ..records import read_record, record_path, validate, write_record
from ..settings import SETTINGS
from ..settings.base import check_record
from .spec import Trial

RULE = "best-mean-val"
RULE_TEXT = (
    "the configuration with the highest validation accuracy averaged over its seeds (the protocol's validation "
    "episodes; each seed's run keeps its own best validation check); ties go to the lower configuration number"
)


@dataclass
class Selection:
    method: str
    protocol: str
    configs: int  # configurations of this method and protocol in the sweep
    complete: int  # of them, with every seed's trial finished
    chosen: int | None = None  # the configuration number kept; None: nothing to select from
    val: float | None = None
    mean: float | None = None  # the selected record's test score
    seed_ci95: float | None = None
    path: Path | None = None  # the selected record
    written: bool = False  # False: an identical selection was already recorded
    reason: str = ""  # why nothing was selected
    searched: dict[str, Any] = field(default_factory=dict)


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()
    except ValueError:  # another drive: keep it absolute
        return path.resolve().as_posix()


def select(trials: Sequence[Trial], folder: Path, results: Path, name: str, write: bool = True) -> list[Selection]:
    """Choose a configuration per (method, protocol) among the trials' records and write its record to
    `results` (unless an identical selection is already there)."""
    groups: dict[tuple[str, str], dict[str, list[Trial]]] = defaultdict(lambda: defaultdict(list))
    for t in trials:
        groups[(t.method, t.protocol)][t.config].append(t)
    out = []
    for (method, protocol), configs in groups.items():
        sel = Selection(method, protocol, len(configs), 0)
        candidates = []
        for members in configs.values():
            paths = [t.record_path(folder) for t in members]
            if not all(p.exists() for p in paths):
                continue
            records = [read_record(p) for p in paths]
            vals = [r["runs"][0].get("selection", {}).get("val_accuracy") for r in records]
            candidates.append((members, records, None if None in vals else float(np.mean(vals))))
        sel.complete = len(candidates)
        if not candidates:
            sel.reason = "no configuration finished every seed"
        elif len(configs) > 1 and any(c[2] is None for c in candidates):
            sel.reason = "a configuration has no validation score to select by"
        else:
            members, records, val = max(candidates, key=lambda c: (c[2] or 0.0, -c[0][0].index))
            sel.chosen, sel.val, sel.searched = members[0].index, val, members[0].searched
            record = merged(members, records, candidates, folder, results, name)
            sel.mean, sel.seed_ci95 = record["summary"]["mean"], record["summary"].get("seed_ci95")
            sel.path = record_path(results, record)
            if write and not sel.path.exists():
                write_record(results, record)
                sel.written = True
        out.append(sel)
    return out


def merged(members: list[Trial], records: list[dict], candidates: list, folder: Path, results: Path, name: str) -> dict:
    """One record of the selected configuration's trials: their runs (one per seed), the setting's summary
    over them, and the sweep section."""
    first = records[0]
    for r in records[1:]:
        if r["protocol"] != first["protocol"] or r["data"] != first["data"]:
            raise BenchError(
                f"the trials of one configuration of {first['method']['name']} on {first['protocol']['name']} were "
                f"scored on different episodes or data ({r['run_id']} vs {first['run_id']}); rerun them"
            )
    runs = []
    for r in sorted(records, key=lambda r: r["seeds"][0]):
        run = dict(r["runs"][0])
        if run.get("checkpoint"):  # named relative to the sweep's folder; now relative to the results folder
            ck = Path(run["checkpoint"]["path"])
            run["checkpoint"] = {
                **run["checkpoint"],
                "path": _relative(ck if ck.is_absolute() else folder / ck, results),
            }
        runs.append(run)
    setting = SETTINGS.get(first["setting"]).for_protocol(first["protocol"]["name"])
    summary = {
        **setting.summary_section(runs),
        "train_time_s": round(sum(r["train_time_s"] for r in runs), 3),
        "eval_time_s": round(sum(r["eval_time_s"] for r in runs), 3),
    }
    listed = [
        {
            "config": ms[0].index,
            "hparams": ms[0].searched,
            "seeds": [t.seed for t in ms],
            "val_accuracy": val,
            "trials": [t.run_id for t in ms],
        }
        for ms, _, val in sorted(candidates, key=lambda c: c[0][0].index)
    ]
    section = {
        "name": name,
        "role": "selected",
        "rule": RULE,
        "folder": _relative(folder, results),
        "config": members[0].index,
        "configs": len({t.config for c in candidates for t in c[0]}),
        "hparams": members[0].searched,
        "val_accuracy": float(np.mean([r["runs"][0]["selection"]["val_accuracy"] for r in records]))
        if all("val_accuracy" in r["runs"][0].get("selection", {}) for r in records)
        else None,
        "trials": [t.run_id for t in sorted(members, key=lambda t: t.seed)],
        "candidates": listed,
    }
    # the same selection from the same trials is the same record: a sweep run again writes nothing new
    identity = json.dumps([name, sorted(t.key for t in members), listed], sort_keys=True).encode()
    commits = sorted({str(r["code"].get("git_commit")) for r in records})
    record = {
        **{k: v for k, v in first.items() if k not in ("sweep", "notes")},
        "run_id": "sweep-" + hashlib.sha256(identity).hexdigest()[:16],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seeds": [run["seed"] for run in runs],
        "runs": runs,
        "summary": summary,
        "sweep": section,
    }
    if len(commits) > 1:
        record["notes"] = f"the trials ran at different commits: {', '.join(commits)}"
    validate(record)
    check_record(record)
    return record
