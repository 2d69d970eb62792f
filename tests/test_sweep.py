"""`bench sweep` end to end on a local Ray cluster of 2 CPU workers (started once for the module): a 4-trial sweep
with its selection on validation data, a sweep run again (nothing re-run, nothing re-written), a failing trial
that stops no other, and a sweep killed for real (SIGKILL) after its first trial and started again, which must
leave every trial's record exactly once. Trials train a tiny backbone for 2 steps on real Omniglot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from benchmark.cli import main
from benchmark.methods import ALGORITHMS, BACKBONES
from benchmark.sweep import RULE

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = "sweep_test_registry"  # what each trial imports (--import): the tiny backbone and a failing method
REGISTRY_CODE = '''
"""Registers what the sweep tests' trials use, in the test process and in each Ray worker."""
from baselines.protonet import ProtoNet
from benchmark.methods import ALGORITHMS, BACKBONES, register
from tests.episodekit import TinyBackbone


class Flaky(ProtoNet):
    name = "flaky-protonet"
    HPARAMS = {**ProtoNet.HPARAMS, "explode": False}

    def training_step(self, ep, batch_idx):
        if self.hp["explode"]:
            raise RuntimeError("this configuration explodes in training, as the test asks")
        return super().training_step(ep, batch_idx)


if "tiny" not in BACKBONES:
    BACKBONES.register("tiny", TinyBackbone)
if "flaky-protonet" not in ALGORITHMS:
    register(Flaky)
'''
SMALL = ["--train-steps", "2", "--episodes", "5", "--val-episodes", "5", "--val-checks", "1", "--quiet"]
TINY = ["--hparam", "backbone=tiny", "--hparam", "train_ways=5", "--hparam", "eval_batch=5"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray of 2 CPUs for the module, whose workers can import the registry module; yields its address."""
    here = tmp_path_factory.mktemp("sweep-registry")
    (here / f"{REGISTRY}.py").write_text(REGISTRY_CODE)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(here), str(ROOT), *([old] if old else [])])  # Ray's workers
    sys.path.insert(0, str(here))
    had = {"tiny": "tiny" in BACKBONES, "flaky": "flaky-protonet" in ALGORITHMS}
    __import__(REGISTRY)  # the driver plans with them too
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
        _system_config={"worker_niceness": 0},  # as bench sweep starts it: trials at the priority of other work
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        sys.path.remove(str(here))
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
        if not had["tiny"]:
            BACKBONES.unregister("tiny")
        if not had["flaky"]:
            ALGORITHMS.unregister("flaky-protonet")


def sweep_args(tmp_path, data_dir, *more):
    return [
        "sweep",
        *more,
        *SMALL,
        "--data-dir",
        str(data_dir),
        "--results",
        str(tmp_path / "results"),
        "--sweeps",
        str(tmp_path / "sweeps"),
        "--import",
        REGISTRY,
    ]


def records_in(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]


def test_a_four_trial_sweep_runs_selects_on_validation_and_resumes(cluster, data_dir, tmp_path, capsys):
    grid = ["--method", "protonet", "--protocol", "omniglot-5w1s", "--seeds", "0", "1", "--grid", "lr=0.001,0.01"]
    args = sweep_args(tmp_path, data_dir, *grid, *TINY, "--name", "four")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 trials: 4 done, 0 skipped" in out, out

    trials = records_in(tmp_path / "sweeps" / "four")
    assert len(trials) == 4 and all(r["sweep"]["role"] == "trial" for r in trials)
    assert len({r["sweep"]["trial"] for r in trials}) == 4
    assert sorted((r["method"]["hparams"]["lr"], r["seeds"][0]) for r in trials) == [
        (0.001, 0),
        (0.001, 1),
        (0.01, 0),
        (0.01, 1),
    ]
    # the selection, recomputed here from the trials' validation scores: best mean over seeds, ties to config 0
    by_config: dict[int, list[float]] = {}
    for r in trials:
        by_config.setdefault(r["sweep"]["index"], []).append(r["runs"][0]["selection"]["val_accuracy"])
    means = {c: float(np.mean(v)) for c, v in by_config.items()}
    best = max(means, key=lambda c: (means[c], -c))

    (selected,) = records_in(tmp_path / "results")
    sw = selected["sweep"]
    assert sw["role"] == "selected" and sw["rule"] == RULE and sw["config"] == best
    assert sw["val_accuracy"] == pytest.approx(means[best])
    chosen = sorted((r for r in trials if r["sweep"]["index"] == best), key=lambda r: r["seeds"][0])
    assert sw["trials"] == [r["run_id"] for r in chosen]
    assert [c["config"] for c in sw["candidates"]] == [0, 1]
    # one ordinary record of the chosen configuration: its seeds' runs, test scores as the trials scored them
    assert selected["seeds"] == [0, 1] and selected["method"]["hparams"] == chosen[0]["method"]["hparams"]
    assert [r["episode_accuracies"] for r in selected["runs"]] == [r["runs"][0]["episode_accuracies"] for r in chosen]
    assert selected["summary"]["seed_ci95"] is not None
    assert "test" not in json.dumps(sw).lower()  # the selection never names a test score

    # started again: everything is recorded, so nothing runs (no Ray task) and nothing is written
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.json")}
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 trials: 0 done, 4 skipped" in out and "(unchanged)" in out, out
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.json")} == before


def test_a_failing_trial_stops_no_other_and_the_exit_says_so(cluster, data_dir, tmp_path, capsys):
    args = sweep_args(
        tmp_path,
        data_dir,
        *("--method", "flaky-protonet", "--protocol", "omniglot-5w1s", "--seeds", "0"),
        *("--grid", "explode=false,true", *TINY),
    )
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "2 trials: 1 done, 0 skipped (recorded before), 1 failed" in out, out
    assert "RuntimeError: this configuration explodes in training" in out
    (selected,) = records_in(tmp_path / "results")
    assert selected["method"]["hparams"]["explode"] is False  # the only configuration with every seed finished
    assert [c["hparams"] for c in selected["sweep"]["candidates"]] == [{"explode": "false"}]


def test_a_sweep_killed_after_its_first_trial_resumes_and_records_each_trial_once(cluster, data_dir, tmp_path, capsys):
    more = ("--method", "protonet", "--protocol", "omniglot-5w1s", "--seeds", "0", "1", "2", "3", *TINY)
    args = sweep_args(tmp_path, data_dir, *more, "--name", "killed")
    folder = tmp_path / "sweeps" / "killed"
    proc = subprocess.Popen(
        # one trial at a time (2 CPUs each), so the kill comes between trials, and one worker to start
        [sys.executable, "-m", "benchmark", *args, "--address", cluster, "--cpus-per-trial", "2"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(folder.rglob("*.json")):
            assert proc.poll() is None, f"the sweep ended before a trial finished: {proc.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no trial finished in 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)  # no clean-up of any kind: as if the machine went down
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = {p: p.read_bytes() for p in folder.rglob("*.json")}
    assert 1 <= len(kept) < 4, "the kill came too late to test resuming"
    assert not list((tmp_path / "results").rglob("*.json"))  # killed before its selection

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 trials:" in out and "0 failed" in out, out
    trials = records_in(folder)
    assert sorted(r["seeds"][0] for r in trials) == [0, 1, 2, 3]  # every trial, each exactly once
    assert len({r["sweep"]["trial"] for r in trials}) == 4
    assert all(p.read_bytes() == data for p, data in kept.items())  # what was recorded was not written again
    assert len(records_in(tmp_path / "results")) == 1
