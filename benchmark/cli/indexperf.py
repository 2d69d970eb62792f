"""`bench perf --index N [N ...]`: the leaderboard at sweep scale, through the results index.

For each N it writes N valid records to a temporary results folder (thirty few-shot and cross-domain
protocols, each method's runs superseding one another, one to three seeds of 600 fixed-episode
accuracies each, built with the setting hooks `bench evaluate` writes records with, and checked as it
checks them), then times

1. the first index build: every record read, validated, checked and indexed, then the board's first
   ranking (every protocol ranked once and remembered);
2. an incremental update after one record is added (the stat walk, that record, one protocol re-ranked);
3. the page (Streamlit's AppTest, in a fresh process, from the built index): its first render, and the
   rerun after one more record is added, which must show that record.

Targets (the 2-core CPU): 10,000 records indexed from scratch in under 60 s, one added record on the page
in under 2 s, the first render from a built index in under 5 s.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import baselines  # noqa: F401  (registers the built-in methods: the records name protonet's defaults)

from ..core.errors import BenchError
from ..core.files import atomic_write_text
from ..page import board as boards
from ..page.index import ResultsIndex
from ..protocols import PROTOCOLS
from ..records import validate, write_record
from ..settings import SETTINGS, Episodic, Scored, check_record, make_record, method_class
from ..stats.ranking import RANKING_RULE

TARGETS = {"build_s": 60.0, "added_on_page_s": 2.0, "first_render_s": 5.0}  # at 10,000 records
PROTOCOL_COUNT = 30
RUNS_PER_ENTRY = 3
BASE_TIME = 1_700_000_000  # 2023-11-14: every generated record is dated in the past


def _protocols() -> list:
    protos = [p for _, p in PROTOCOLS.items() if isinstance(SETTINGS.get(p.setting), Episodic)]
    return protos[:PROTOCOL_COUNT]


class _Episodes:
    """What a setting's protocol section reads from prepared test episodes: their count and fingerprint."""

    def __init__(self, protocol, n: int):
        self.n = n
        self.fingerprint = f"sweep-{protocol.name}-v{protocol.version}-{n}"

    def __len__(self) -> int:
        return self.n


class RecordMaker:
    """Valid records of synthetic methods: one template per protocol from the run loop's own `make_record`,
    then per record new accuracies, runs and summary from the protocol's setting hooks."""

    def __init__(self, n_records: int, seed: int = 0):
        import torch

        self.protocols = _protocols()
        self.n_methods = max(20, math.ceil(n_records / (len(self.protocols) * RUNS_PER_ENTRY)))
        self.rng = np.random.default_rng(seed)
        cls = method_class("protonet")
        cfg = SimpleNamespace(source=None, kind="evaluation", sweep=None)
        self.templates, self.difficulty = [], []
        for p in self.protocols:
            setting = SETTINGS.get(p.setting)
            data = SimpleNamespace(
                episodes=_Episodes(p, p.test_episodes), data_fingerprints={d: "0" * 16 for d in p.datasets}
            )
            runs = self._runs(setting, p, np.full(p.test_episodes, 0.5), [0])
            record = make_record(
                "template", setting, p, data, "template", cls, cls.defaults(), None, runs, torch.device("cpu"), cfg
            )
            self.templates.append(record)
            self.difficulty.append(self.rng.normal(0.0, 0.08, p.test_episodes))
        self.skill = self.rng.uniform(0.35, 0.9, self.n_methods)

    def _runs(self, setting, protocol, p_correct: np.ndarray, seeds: list[int]) -> list[dict]:
        total = protocol.summary()["ways"] * protocol.summary()["queries"]
        runs = []
        for seed in seeds:
            accs = self.rng.binomial(total, np.clip(p_correct, 0, 1)) / total
            runs.append(
                {
                    "seed": seed,
                    **setting.run_section(Scored(units=accs, seconds=1.0)),
                    "train_steps": 1000,
                    "train_budget": {"steps": 1000, "max_time_s": None},
                    "train_time_s": 60.0,
                    "eval_time_s": 1.0,
                    "selection": {"rule": "final"},
                    "checkpoint": None,
                }
            )
        return runs

    def record(self, i: int) -> dict:
        k = i % len(self.protocols)
        j = (i // len(self.protocols)) % self.n_methods
        template, protocol = self.templates[k], self.protocols[k]
        setting = SETTINGS.get(template["setting"])
        runs = self._runs(setting, protocol, self.skill[j] + self.difficulty[k], list(range(1 + i % 3)))
        created = time.gmtime(BASE_TIME + i)
        record = {
            **template,
            "run_id": time.strftime("%Y%m%dT%H%M%SZ", created) + f"-{i:06x}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", created),
            "method": {**template["method"], "name": f"sweep-{j:03d}", "paper": "synthetic"},
            "seeds": [r["seed"] for r in runs],
            "runs": runs,
            "summary": {
                **setting.summary_section(runs),
                "train_time_s": sum(r["train_time_s"] for r in runs),
                "eval_time_s": sum(r["eval_time_s"] for r in runs),
            },
        }
        validate(record)
        check_record(record)
        return record


def generate(results: Path, n: int, seed: int = 0) -> RecordMaker:
    maker = RecordMaker(n, seed)
    for i in range(n):
        write_record(results, maker.record(i))
    return maker


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.json")) / 2**20


ADDED = 3  # records added one at a time on the page; the median rerun is reported

# Run in a fresh process, as a server that starts from a built index: times the page's first render and its
# rerun after each added record, and checks that the record is on the page.
_PAGE_DRIVER = """
import json, statistics, sys, time
t0 = time.perf_counter()
from streamlit.testing.v1 import AppTest
from benchmark.cli.indexperf import RecordMaker
from benchmark.records import write_record
imported = time.perf_counter() - t0
app, results, n, first, added = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
at = AppTest.from_file(app, default_timeout=600)
t0 = time.perf_counter()
at.run()
first_render = time.perf_counter() - t0
assert not at.exception, at.exception
maker, reruns, shown = RecordMaker(n, seed=1), [], True
for i in range(added):
    record = maker.record(first + i)
    write_record(results, record)
    t0 = time.perf_counter()
    at.run()
    reruns.append(time.perf_counter() - t0)
    assert not at.exception, at.exception
    shown &= any(record["run_id"] in d.value["Run"].tolist() for d in at.dataframe if "Run" in d.value)
print(json.dumps({"imports_s": imported, "first_render_s": first_render, "added_on_page_s": statistics.median(reruns),
                  "added_reruns_s": reruns, "added_shown": shown}))
"""


def page_times(results: Path, n: int, first: int) -> dict:
    """The page in a fresh process over the built index: first render, then reruns after added records."""
    from ..cli.serve import app_path

    env = {**os.environ, "BENCH_RESULTS_DIR": str(results), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-c", _PAGE_DRIVER, str(app_path()), str(results), str(n), str(first), str(ADDED)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise BenchError(f"bench perf --index: the page run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(n: int, log=print) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        results = Path(tmp) / "results"
        t = time.perf_counter()
        maker = generate(results, n)
        gen_s = time.perf_counter() - t
        size = f"{_folder_mb(results):.0f} MB, {maker.n_methods} methods x {len(maker.protocols)} protocols"
        log(f"  wrote {n:,} records ({size}) in {gen_s:.0f} s")

        index = ResultsIndex(results)
        t = time.perf_counter()
        built = index.sync()
        sync_s = time.perf_counter() - t
        board = boards.load(results, index=index)
        build_s = time.perf_counter() - t
        if built.checked != n or board.warnings:
            raise BenchError(f"bench perf --index: generated records were left out: {board.warnings[:3]}")
        log(
            f"  first build: {build_s:.1f} s ({sync_s:.1f} s reading and checking, {build_s - sync_s:.1f} s ranking "
            f"{len(board.table):,} entries)"
        )

        write_record(results, maker.record(n))  # a new run of an existing entry: it supersedes one
        t = time.perf_counter()
        update = index.sync()
        board = boards.load(results, index=index)
        update_s = time.perf_counter() - t
        log(f"  one record added: {update_s:.2f} s (stat walk and update {update.seconds:.2f} s, {update.read} read)")
        t = time.perf_counter()
        boards.load(results, index=index)
        same_s = time.perf_counter() - t
        index.close()

        page = page_times(results, n, n + 1)
        reruns = ", ".join(f"{x:.2f}" for x in page["added_reruns_s"])
        log(
            f"  page (fresh process, built index): first render {page['first_render_s']:.2f} s "
            f"(+{page['imports_s']:.1f} s imports); rerun after each of {ADDED} added records: {reruns} s "
            f"(shown: {page['added_shown']})"
        )
        return {
            "records": n,
            "megabytes": round(_folder_mb(results), 1),
            "methods": maker.n_methods,
            "protocols": len(maker.protocols),
            "entries_shown": int(len(board.table)),
            "generate_s": gen_s,
            "build_s": build_s,
            "build_read_check_s": sync_s,
            "added_update_s": update_s,
            "unchanged_reload_s": same_s,
            **page,
        }


def main(args) -> int:
    sizes = args.index
    if any(n < 1 for n in sizes):
        raise BenchError("bench perf --index: give record counts of at least 1, e.g. --index 1000 10000")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"the results index at sweep scale (OMP_NUM_THREADS={threads}); {RANKING_RULE.split(':')[0].lower()}")
    out = []
    for n in sizes:
        print(f"N = {n:,} records ...", flush=True)
        out.append(measure(n))
    print("\n| records | first build (s) | one added, index (s) | page first render (s) | one added, on page (s) |")
    print("| --- | --- | --- | --- | --- |")
    for r in out:
        cells = [r["build_s"], r["added_update_s"], r["first_render_s"], r["added_on_page_s"]]
        print(f"| {r['records']:,} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    t = TARGETS
    print(
        f"targets at 10,000 records: build < {t['build_s']:.0f} s, first render < {t['first_render_s']:.0f} s, "
        f"added on page < {t['added_on_page_s']:.0f} s (the page's time is the median of {ADDED} reruns)"
    )
    if args.out:
        atomic_write_text(args.out, json.dumps({"targets": TARGETS, "runs": out}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0
