"""Training options of `bench evaluate`: --devices N (Lightning's DDP, the meta-batch split across N processes;
on the CPU, 2 gloo processes) gives the one-device numbers up to float rounding, and --logger writes training
curves offline where the record says. Plus `shard`, the split of a batch across processes."""

from __future__ import annotations

import csv
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from episodekit import TinyBackbone, random_episodes

import baselines  # noqa: F401  (registers the built-in methods)
from benchmark.core.errors import BenchError
from benchmark.methods import BACKBONES
from benchmark.run import RunConfig
from benchmark.run.training import shard
from benchmark.settings import run
from benchmark.store import load_store

ROOT = Path(__file__).resolve().parents[1]
# A ProtoNet with plain SGD on a batch-norm-free backbone: each step moves the weights by exactly lr x the
# gradient, so the weights after training compare the gradients DDP averaged with one device's. (Adam divides
# by the gradient's running scale, which turns a rounding difference in a near-zero gradient into a whole step.)
SCRIPT = """
import sys

import torch

from baselines.protonet import ProtoNet
from benchmark.methods import ALGORITHMS, BACKBONES, register
from tests.episodekit import SmoothMlp


class SgdProtoNet(ProtoNet):
    name = "sgd-protonet"

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hp["lr"])


def add():
    register(SgdProtoNet)
    BACKBONES.register("smooth", SmoothMlp)


def remove():
    ALGORITHMS.unregister("sgd-protonet")
    BACKBONES.unregister("smooth")


if __name__ == "__main__":  # Lightning's DDP launcher runs this file again for the second process
    from benchmark.cli import main

    add()
    sys.exit(main(sys.argv[1:]))
"""
OPTIONS = {
    "episodes": 10,
    "train_steps": 4,
    "select": "final",
    "seeds": (0, 1),
    "hparams": {"backbone": "smooth", "meta_batch": 4, "train_ways": 5, "lr": 0.5},
}


def test_two_gloo_processes_train_what_one_device_trains(data_dir, tmp_path):
    script = tmp_path / "bench_with_sgd.py"
    script.write_text(SCRIPT)
    load_store("omniglot", 28, 1, data_dir)  # the image cache, decoded once before the processes read it
    cli = [
        *("evaluate", "--method", "sgd-protonet", "--protocol", "omniglot-5w1s", "--device", "cpu", "--quiet"),
        *("--train-steps", "4", "--episodes", "10", "--select", "final", "--seeds", "0", "1", "--devices", "2"),
        *("--hparam", "backbone=smooth", "--hparam", "meta_batch=4", "--hparam", "train_ways=5", "--hparam", "lr=0.5"),
        *("--data-dir", str(data_dir), "--results", str(tmp_path / "results-2")),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(script), *cli], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    sys.path.insert(0, str(tmp_path))  # one device, here, meanwhile
    module = importlib.import_module("bench_with_sgd")
    module.add()
    try:
        where = {"data_dir": str(data_dir), "results_dir": str(tmp_path / "results-1"), "log": lambda _m: None}
        one, _ = run("sgd-protonet", "omniglot-5w1s", device="cpu", progress=False, **where, **OPTIONS)
    finally:
        module.remove()
        sys.path.remove(str(tmp_path))
        sys.modules.pop("bench_with_sgd", None)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"--devices 2 failed:\n{err.decode()[-3000:]}"
    two = json.loads(next((tmp_path / "results-2").rglob("*.json")).read_text())
    assert [r.get("train_devices") for r in two["runs"]] == [2, 2] and "train_devices" not in one["runs"][0]
    assert [r["train_steps"] for r in two["runs"]] == [4, 4]
    for r1, r2 in zip(one["runs"], two["runs"]):
        w1 = torch.load(tmp_path / "results-1" / r1["checkpoint"]["path"], weights_only=True)["state_dict"]
        w2 = torch.load(tmp_path / "results-2" / r2["checkpoint"]["path"], weights_only=True)["state_dict"]
        assert set(w1) == set(w2)
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6, msg=f"seed {r1['seed']}: {k}")
        assert r2["episode_accuracies"] == pytest.approx(r1["episode_accuracies"], abs=1 / 75 + 1e-9)
    # Had each process trained alone on its half, or both on the same half, the weights would differ; had both
    # seen the whole batch they would agree too, which is why the split itself is checked below.


def test_shard_splits_every_tensor_of_a_batch():
    ep = random_episodes(4, 5, 1, 2)
    halves = [shard(ep, r, 2) for r in (0, 1)]
    assert all(h.batch_size == 2 and h.ways == 5 and h.shots == 1 for h in halves)
    assert torch.equal(torch.cat([h.query_x for h in halves]), ep.query_x)
    assert torch.equal(torch.cat([h.support_y for h in halves]), ep.support_y)
    images, labels = torch.randn(6, 1, 4, 4), torch.arange(6)
    parts = [shard((images, labels), r, 3) for r in range(3)]
    assert [p[1].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert shard(ep, 0, 1) is ep
    with pytest.raises(BenchError, match="meta_batch"):
        shard(ep, 0, 3)


@pytest.fixture
def tiny():
    BACKBONES.register("tiny", TinyBackbone)
    yield "tiny"
    BACKBONES.unregister("tiny")


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_a_logger_writes_the_training_curves_where_the_record_says(logger, data_dir, tmp_path, tiny):
    record, _ = run(
        "protonet",
        "omniglot-5w1s",
        seeds=(0,),
        episodes=5,
        train_steps=20,
        val_episodes=5,
        val_checks=1,
        hparams={"backbone": "tiny", "train_ways": 5, "eval_batch": 5},
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "results"),
        progress=False,
        logger=logger,
        log=lambda _m: None,
    )
    log = record["runs"][0]["log"]
    folder = (tmp_path / "results" / log["path"]).resolve()
    assert log["logger"] == logger
    assert folder.is_relative_to((tmp_path / "logs").resolve())  # beside the results folder, not inside it
    if logger == "csv":
        rows = list(csv.DictReader((folder / "metrics.csv").open()))
        losses = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
        rates = {float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")}
        assert len(losses) == 20 and all(x > 0 for x in losses)  # every step (20 steps: one log a step)
        assert rates == {1e-3}  # ProtoNet's Adam rate, halved only after 2000 steps
    else:
        assert list(folder.glob("events.out.tfevents.*"))


def test_training_options_are_checked_before_any_work():
    with pytest.raises(BenchError, match="--devices must be at least 1"):
        RunConfig("protonet", devices=0)
    with pytest.raises(BenchError, match="--logger must be one of"):
        RunConfig("protonet", logger="neptune")
    from benchmark.settings import plan

    with pytest.raises(BenchError, match="--devices is offered for the episodic settings"):
        plan(RunConfig("erm", ("pacs-dg-photo",), devices=2))
