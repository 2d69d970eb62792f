"""Model selection on the protocol's validation episodes: checked during training and at its end, the best
model is the one scored and saved, and the record says which step won; no validation split, or
--select final, keeps the final model."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark import settings
from benchmark.episodes import fixed_episodes
from benchmark.methods import MetaLearner, prototypes
from benchmark.protocols import PROTOCOLS
from benchmark.settings import episodic_training

CHECKS = 3


class LinearProto(MetaLearner):
    """Prototypes on a learnt linear embedding of the pixels: trains fast, and its accuracy moves."""

    name = "linear-proto"
    paper = "test stand-in"
    HPARAMS = {"lr": 0.5}

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.embed = torch.nn.Linear(2 * 2 * 2, 8)  # the synthetic views: 2 channels, 2x2 pixels

    def predict(self, support_x, support_y, query_x, ways):
        zs, zq = self.embed(support_x.flatten(2)), self.embed(query_x.flatten(2))
        return -torch.cdist(zq, prototypes(zs, support_y, ways))

    def training_step(self, ep, batch_idx):
        logits = self.predict(ep.support_x, ep.support_y, ep.query_x, ep.ways)
        return F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hp["lr"])


@pytest.fixture
def synthetic(make_view, monkeypatch):
    """omniglot-5w1s's protocol on synthetic views: 12 train, 8 validation, 8 test classes."""
    made = {}

    def fake_prepare_run(protocol, device, n_episodes=None, data_dir=None, built=None, val_episodes=0):
        train = make_view([20] * 12, label="synthetic/train", size=2)
        test = make_view([20] * 8, label="synthetic/test", size=2)
        key = f"{protocol.name}:v{protocol.version}"
        eps = fixed_episodes(test, protocol.episode_spec, f"{key}:test", n_episodes)
        val = val_eps = None
        if val_episodes and protocol.val is not None:
            val = make_view([20] * 8, label="synthetic/val", size=2)
            val_eps = fixed_episodes(val, protocol.episode_spec, f"{key}:val", val_episodes)
        made["prep"] = episodic_training.Prepared(protocol, train, test, eps, {"omniglot": "f" * 64}, val, val_eps)
        return made["prep"]

    monkeypatch.setattr(episodic_training, "prepare_run", fake_prepare_run)
    return made


def run(tmp_path, protocol="omniglot-5w1s", **kw):
    return settings.run(
        "linear-proto",
        protocol,
        episodes=10,
        train_steps=12,
        device="cpu",
        method_cls=LinearProto,
        results_dir=str(tmp_path),
        progress=False,
        val_episodes=20,
        val_checks=CHECKS,
        log=lambda _m: None,
        **kw,
    )


def test_the_best_validated_model_is_the_one_scored(synthetic, tmp_path):
    record, path = run(tmp_path)
    sel = record["runs"][0]["selection"]
    assert sel["rule"] == "best-val" and sel["split"] == PROTOCOLS.get("omniglot-5w1s").val.label
    assert sel["checked_steps"] == [4, 8, 12] and sel["episodes"] == 20
    accs = sel["val_accuracies"]
    best = max(accs)
    assert sel["val_accuracy"] == best
    assert sel["chosen_step"] == max(s for s, a in zip(sel["checked_steps"], accs) if a == best)  # ties: later
    # the checkpoint holds the chosen weights: they score the recorded validation accuracy again
    prep = synthetic["prep"]
    blob = torch.load(tmp_path / record["runs"][0]["checkpoint"]["path"], weights_only=True)
    model = settings.setting_of(prep.protocol).build_model(LinearProto, prep, blob["hparams"])
    model.load_state_dict(blob["state_dict"])
    again, _ = settings.evaluate_model(
        model, prep.val, prep.val_episodes, prep.protocol, torch.device("cpu"), progress=False
    )
    assert again.mean() == pytest.approx(best, abs=1e-9)


def test_final_model_when_asked_or_when_the_protocol_has_no_validation_split(synthetic, tmp_path):
    record, _ = run(tmp_path / "a", select="final")
    assert record["runs"][0]["selection"] == {"rule": "final"}
    assert PROTOCOLS.get("omniglot-lake-5w1s").val is None
    record, _ = run(tmp_path / "b", protocol="omniglot-lake-5w1s")
    assert record["runs"][0]["selection"] == {"rule": "final"}


class SlowLinearProto(LinearProto):
    name = "slow-linear-proto"

    def training_step(self, ep, batch_idx):
        time.sleep(0.05)  # a step that costs time, so that a time budget ends training early
        return super().training_step(ep, batch_idx)


def test_a_time_budget_spreads_the_validation_checks_over_time(synthetic, tmp_path):
    """Under --max-train-time a run may stop far below its step budget; checks then come by time."""
    record, _ = settings.run(
        "slow-linear-proto",
        "omniglot-5w1s",
        episodes=10,
        train_steps=100_000,
        device="cpu",
        method_cls=SlowLinearProto,
        results_dir=str(tmp_path),
        progress=False,
        val_episodes=5,
        val_checks=3,
        max_train_time=2.0,
        log=lambda _m: None,
    )
    run = record["runs"][0]
    assert run["train_steps"] < 100_000 // 3  # stopped by time before the first step-based check
    assert len(run["selection"]["checked_steps"]) >= 3  # by time, plus the one at the end


def test_cpu_scoring_passes_are_capped_by_image_size_and_never_change_a_score(synthetic, monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    omniglot, caltech = PROTOCOLS.get("omniglot-5w1s"), PROTOCOLS.get("caltech101-5w1s")
    assert episodic_training.episodes_per_pass(50, omniglot, cpu) == 50  # 28 px grey: the method's own batch
    assert 1 <= episodic_training.episodes_per_pass(50, caltech, cpu) < 10  # 84 px colour: capped
    assert episodic_training.episodes_per_pass(50, caltech, gpu) == 50
    prep = episodic_training.prepare_run(omniglot, cpu, 30)
    torch.manual_seed(0)
    model = settings.setting_of(omniglot).build_model(LinearProto, prep, LinearProto.resolve_hparams({}))
    passes: list[int] = []
    predict = model.predict_episodes
    monkeypatch.setattr(model, "predict_episodes", lambda ep: passes.append(ep.batch_size) or predict(ep))
    whole, _ = settings.evaluate_model(model, prep.test, prep.episodes, omniglot, cpu, progress=False)
    monkeypatch.setattr(episodic_training, "CPU_PASS_VALUES", 1)  # one episode a pass
    apart, _ = settings.evaluate_model(model, prep.test, prep.episodes, omniglot, cpu, progress=False)
    assert passes == [30] + [1] * 30
    assert len(whole) == len(apart) == 30 and 0 < whole.mean() < 1
    # the same episodes in the same order; a batched distance can round a tie between two prototypes the
    # other way (the synthetic 2x2 images make ties), which moves one query of 75, never more
    assert np.abs(whole - apart).max() <= 1 / 75 + 1e-6 and (whole == apart).mean() > 0.8
