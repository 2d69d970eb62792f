"""The continual setting: GEM's metrics on a hand-worked example, fixed streams, orders and groups (golden
fingerprints), a learner that never observes an image it is later scored on, records that validate and verify,
and the meta-training sequence with an ordinary few-shot method."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from benchmark.core.errors import BenchError, InvalidRecord
from benchmark.methods import ALGORITHMS, BACKBONES
from benchmark.methods.continual import ContinualLearner
from benchmark.protocols import PROTOCOLS, stream_order
from benchmark.protocols.continual import GROUPS, SPLIT_ALPHABETS
from benchmark.records.continual import gem_metrics
from benchmark.run.config import RunConfig
from benchmark.settings import check_record
from tests.episodekit import TinyBackbone, refused_before_data

STREAM = "omniglot-oml-stream"


def test_gem_metrics_match_a_hand_worked_example():
    r = [[0.8, 0.1, 0.2], [0.6, 0.9, 0.3], [0.5, 0.7, 0.95]]
    m = gem_metrics(r, [0.1, 0.2, 0.25])
    assert m.acc == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert m.bwt == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)  # -0.25: forgetting
    assert m.fwt == pytest.approx(((0.1 - 0.2) + (0.3 - 0.25)) / 2)  # -0.025
    assert gem_metrics([[0.4]]).bwt == 0.0 and gem_metrics([[0.4]]).fwt is None
    with pytest.raises(ValueError, match="square"):
        gem_metrics([[0.1, 0.2]])
    with pytest.raises(ValueError, match="one accuracy per task"):
        gem_metrics(r, [0.1, 0.2])


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def test_streams_task_orders_and_groups_are_fixed():
    """Golden fingerprints: a change to how streams, task orders or groups are drawn fails here, and needs a new
    protocol version."""
    p = PROTOCOLS.get(STREAM)
    classes = tuple(f"c{i}" for i in range(659))
    orders = [stream_order(p, i, classes).tolist() for i in range(10)]
    assert all(sorted(o) == list(range(659)) for o in orders) and len({tuple(o) for o in orders}) == 10
    assert _sha(orders) == "786522e4b9d434b2"
    assert _sha(list(SPLIT_ALPHABETS)) == "aad727ba92287f82"
    assert _sha([list(g) for g in GROUPS]) == "e26f2dc09dc2b207"
    assert len(SPLIT_ALPHABETS) == 20 and sum(len(g) for g in GROUPS) == 30


class Recorder(ContinualLearner):
    """Learns its head by plain SGD and remembers the bytes of every image it observes."""

    name = "test-recorder"
    paper = "a test learner"

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.observed: set[bytes] = set()

    def observe(self, x, y, seen):
        assert int(y.max()) < seen
        self.observed.update(row.numpy().tobytes() for row in x.cpu())
        self.sgd_steps(x, y, seen, list(self.head.parameters()))


@pytest.fixture
def recorder():
    ALGORITHMS.register(Recorder.name, Recorder)
    BACKBONES.register("tiny", TinyBackbone)
    yield Recorder
    ALGORITHMS.unregister(Recorder.name)
    BACKBONES.unregister("tiny")


def _normalised_rows(view) -> set[bytes]:
    return {row.numpy().tobytes() for row in view.normalise(view.images).cpu()}


@pytest.mark.integration
def test_a_stream_learner_never_observes_a_scored_image_and_its_record_verifies(recorder, data_dir, tmp_path):
    from benchmark.cli.main import main
    from benchmark.settings.continual_training import prepare_stream

    cfg = RunConfig(recorder.name, (STREAM,), episodes=2, max_classes=12, data_dir=str(data_dir))
    data = prepare_stream(PROTOCOLS.get(STREAM), torch.device("cpu"), cfg)
    assert data.checkpoints == (10, 12) and data.classes_limit == 12
    held_out = _normalised_rows(data.test[0])
    assert len(data.test[0].images) == 5 * data.test[0].n_classes  # 5 of every character's 20 drawers
    assert len(data.learn[0].images) == 15 * data.learn[0].n_classes

    from benchmark.settings.runner import run

    seen: list[set[bytes]] = []
    orig = Recorder.observe

    def spy(self, x, y, s):
        orig(self, x, y, s)
        seen.append(self.observed)

    Recorder.observe = spy  # type: ignore[method-assign]
    try:
        record, path = run(
            recorder.name, STREAM, episodes=2, max_classes=12, train_steps=3, hparams={"backbone": "tiny"},
            data_dir=str(data_dir), results_dir=str(tmp_path / "results"), progress=False, log=lambda _m: None,
        )  # fmt: skip
    finally:
        Recorder.observe = orig  # type: ignore[method-assign]
    observed = set().union(*seen)
    assert observed <= _normalised_rows(data.learn[0]) and not observed & held_out
    p = record["protocol"]
    assert p["classes_limit"] == 12 and p["streams"] == 2 and p["checkpoints"] == [10, 12]
    run0 = record["runs"][0]
    assert np.shape(run0["test_accuracy"]) == (2, 2) and run0["stream_accuracies"] == [
        r[-1] for r in run0["test_accuracy"]
    ]
    check_record(record)
    assert main(["verify", str(path), "--data-dir", str(data_dir)]) == 0

    forged = json.loads(path.read_text())
    forged["runs"][0]["stream_accuracies"][0] = 0.99
    with pytest.raises(InvalidRecord, match="last checkpoint"):
        check_record(forged)
    forged = json.loads(path.read_text())
    forged["summary"]["curve"]["test_mean"][0] = 0.99
    with pytest.raises(InvalidRecord, match="summary curve"):
        check_record(forged)


@pytest.mark.integration
def test_a_task_sequence_records_its_accuracy_matrix(recorder, data_dir, tmp_path, capsys):
    from benchmark.cli.main import main
    from benchmark.settings.runner import run

    record, _ = run(
        recorder.name, "split-omniglot-alphabets-til", train_steps=2, hparams={"backbone": "tiny"},
        data_dir=str(data_dir), write=False, progress=False, log=lambda _m: None,
    )  # fmt: skip
    run0 = record["runs"][0]
    r = np.asarray(run0["R"])
    assert r.shape == (20, 20) and run0["task_accuracies"] == r[-1].tolist()
    m = gem_metrics(r, run0["b"])
    assert (run0["acc"], run0["bwt"], run0["fwt"]) == pytest.approx((m.acc, m.bwt, m.fwt))
    assert record["protocol"]["tasks"] == list(SPLIT_ALPHABETS)
    assert sum(record["protocol"]["task_classes"]) == 659
    check_record(record)
    forged = json.loads(json.dumps(record))
    forged["summary"]["bwt"] = 0.5
    with pytest.raises(InvalidRecord, match="summary bwt"):
        check_record(forged)

    # bench compare pairs ACC and BWT over seeds: B forgets less on every earlier task, seed by seed
    r = np.asarray(run0["R"])
    a = _with_runs(record, [(0, r), (1, r * 0.9)], run0["b"])
    b = _with_runs(record, [(0, _forget_less(r, 0.1)), (1, _forget_less(r * 0.9, 0.05))], run0["b"])
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert main(["compare", str(pa), str(pb)]) == 0
    out = capsys.readouterr().out
    bwt_line = next(line for line in out.splitlines() if line.startswith("BWT A - B"))
    assert "over 2 seeds paired by seed" in bwt_line and bwt_line.split()[4].startswith("-")


def _forget_less(r: np.ndarray, by: float) -> np.ndarray:
    out = r.copy()
    out[-1, :-1] = np.minimum(1.0, r[-1, :-1] + by)
    return out


def _with_runs(record: dict, matrices, b) -> dict:
    """The record with one run per (seed, R), each consistent with its matrix (as the setting writes them)."""
    from benchmark.settings import SETTINGS, Scored

    part = SETTINGS.get("continual").for_protocol(record["protocol"]["name"])
    runs = []
    for seed, r in matrices:
        scored = Scored(np.asarray(r[-1]), 1.0, {"R": r.tolist(), "b": b})
        runs.append({**record["runs"][0], "seed": seed, **part.run_section(scored), "R": r.tolist(), "b": b})
    summary = {**record["summary"], **part.summary_section(runs)}
    out = {**record, "runs": runs, "seeds": [s for s, _ in matrices], "summary": summary}
    check_record(out)
    return out


@pytest.mark.integration
def test_the_meta_sequence_runs_a_few_shot_method(data_dir):
    import baselines  # noqa: F401  registers protonet
    from benchmark.settings.runner import run

    BACKBONES.register("tiny", TinyBackbone)
    try:
        record, _ = run(
            "protonet", "omniglot-meta-sequence-5w1s", episodes=4, train_steps=2,
            hparams={"backbone": "tiny", "train_ways": 5}, data_dir=str(data_dir), write=False, progress=False,
            log=lambda _m: None,
        )  # fmt: skip
    finally:
        BACKBONES.unregister("tiny")
    run0 = record["runs"][0]
    assert np.shape(run0["R"]) == (5, 5) and len(run0["episode_accuracies"]) == 20
    assert run0["stage_steps"] == [2] * 5 and run0["train_steps"] == 10
    assert record["protocol"]["episodes_per_task"] == 4
    check_record(record)


def test_stream_options_are_refused_before_any_data(tmp_path, capsys):
    out = refused_before_data(["--protocol", "omniglot-5w1s", "--max-classes", "10"], tmp_path, capsys)
    assert "--max-classes" in out and "not a stream protocol" in out
    import baselines  # noqa: F401

    out = refused_before_data(["--method", "protonet", "--protocol", STREAM], tmp_path, capsys)
    assert "not a continual learner" in out or "cannot run" in out


def test_a_bad_max_classes_is_refused():
    with pytest.raises(BenchError, match="--max-classes"):
        RunConfig("x", (STREAM,), max_classes=0)


@pytest.mark.integration
def test_a_meta_continual_learner_retains_more_than_sequential_finetuning(data_dir):
    """La-MAML's learned step sizes and look-ahead meta-gradient against plain SGD, from the same short plain
    pre-training, on the first 10 classes of one real stream (one image per update): SGD ends up predicting the
    last class learned (retention 1/10), La-MAML keeps earlier classes."""
    import baselines  # noqa: F401
    from benchmark.settings.runner import run

    BACKBONES.register("tiny", TinyBackbone)
    try:
        kept = {}
        for method in ("seq-finetune", "la-maml"):
            record, _ = run(
                method, STREAM, episodes=1, max_classes=10, train_steps=30, hparams={"backbone": "tiny"},
                data_dir=str(data_dir), write=False, progress=False, log=lambda _m: None,
            )  # fmt: skip
            kept[method] = record["runs"][0]["retention"][0][-1]
    finally:
        BACKBONES.unregister("tiny")
    assert kept["la-maml"] > 0.25 and kept["la-maml"] > kept["seq-finetune"] + 0.15, kept
