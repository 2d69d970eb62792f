"""meta-augment: the policy's meta-gradient against finite differences, a fixed policy that learns nothing and a
learned one that moves, test-time augmentation that is a function of the episode's support set alone, the
recipes and shared training, the policy read back from a checkpoint, and learning real Omniglot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from episodekit import SmoothMlp, TinyBackbone, learning_scores, random_episodes, refused_before_data

import baselines  # noqa: F401  (registers the built-in methods)
from baselines.meta_augment import MetaAugment, MetaAugmentFixed, support_seeds
from baselines.protonet import ProtoNet
from benchmark.methods import BACKBONES, TaskInfo
from benchmark.methods.augment import OPS, AugmentPolicy, draw, policy_in_checkpoint
from benchmark.run import RunConfig, save_checkpoint
from benchmark.settings import episodic_training, runner

TASK = TaskInfo(ways=3, shots=2, queries=2, image_size=12, channels=3, n_train_classes=10)


@pytest.fixture(scope="module", autouse=True)
def backbones():
    BACKBONES.register("tiny", TinyBackbone)
    BACKBONES.register("smooth", SmoothMlp)
    yield
    BACKBONES.unregister("tiny")
    BACKBONES.unregister("smooth")


def build(**hp) -> MetaAugment:
    torch.manual_seed(0)
    model = MetaAugment(TASK, **{"backbone": "tiny", "copies": 2, **hp}).double()
    model.log_dict = lambda *a, **k: None  # outside a Trainer there is nothing to log to
    return model


def episodes(b=2, seed=0):
    return random_episodes(b, TASK.ways, TASK.shots, TASK.queries, channels=3, size=12, dtype=torch.float64, seed=seed)


def adam_steps(model: MetaAugment, n: int = 3) -> None:
    opt = model.configure_optimizers()["optimizer"]
    model.train()
    for seed in range(n):
        loss = model.training_step(episodes(seed=seed + 1), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()


# ---- the meta-gradient ----------------------------------------------------------------------------------------


def test_policy_meta_gradient_matches_central_finite_differences():
    """d(query loss)/d(policy logits) through the relaxed gates, the sampling grid, the colour ops and the soft
    cutout mask, on a smooth float64 backbone with the random draws held fixed."""
    model = build(backbone="smooth").train()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # away from the symmetric starting point, so every operation has its own value
        model.policy.magnitude_logit.copy_(torch.randn(len(OPS), generator=g, dtype=torch.float64) * 0.5)
        model.policy.probability_logit.copy_(torch.randn(len(OPS), generator=g, dtype=torch.float64) * 0.5)
    ep = episodes(b=2, seed=5)
    fixed = draw(2 * TASK.ways * TASK.shots * 2, torch.Generator().manual_seed(11))

    def loss() -> torch.Tensor:
        sx, sy = model.expand(ep.support_x, ep.support_y, fixed)
        logits = ProtoNet.predict(model, sx, sy, ep.query_x, ep.ways)
        return F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten())

    params = [model.policy.magnitude_logit, model.policy.probability_logit]
    grads = torch.autograd.grad(loss(), params)
    eps = 1e-6
    for p, gp in zip(params, grads):
        fd = torch.empty_like(p)
        for i in range(p.numel()):
            with torch.no_grad():
                p[i] += eps
                up = loss()
                p[i] -= 2 * eps
                down = loss()
                p[i] += eps
            fd[i] = (up - down) / (2 * eps)
        assert (gp.abs() > 1e-6).all(), gp  # every magnitude and probability reaches the query loss
        assert torch.allclose(gp, fd, rtol=1e-5, atol=1e-9), (gp, fd)


def test_the_backbone_also_learns_through_the_augmented_supports():
    model = build(backbone="smooth").train()
    ep = episodes()
    fixed = draw(2 * TASK.ways * TASK.shots * 2, torch.Generator().manual_seed(1))
    sx, sy = model.expand(ep.support_x, ep.support_y, fixed)
    copies = sx[:, TASK.ways * TASK.shots :]
    (grad,) = torch.autograd.grad(copies.sum(), model.policy.magnitude_logit)
    assert grad.abs().sum() > 0  # the copies are a function of the policy
    assert torch.equal(sy[:, TASK.ways * TASK.shots :], ep.support_y.repeat_interleave(2, 1))


# ---- fixed and learned policies -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["policy=fixed", "meta-augment-fixed"])
def test_a_fixed_policy_has_no_trainable_parameters_and_keeps_its_values(variant):
    hp = {"magnitude": 0.3, "probability": 1.0}
    if variant == "policy=fixed":
        model = build(policy="fixed", **hp)
    else:
        torch.manual_seed(0)
        model = MetaAugmentFixed(TASK, backbone="tiny", copies=2, **hp).double()
        model.log_dict = lambda *a, **k: None
    assert not [n for n, _ in model.named_parameters() if n.startswith("policy.")]
    groups = model.configure_optimizers()["optimizer"].param_groups
    assert len(groups) == 1  # the backbone's only
    before = model.record_extra()
    adam_steps(model)
    assert model.record_extra() == before
    assert before["ops"]["rotate"] == {
        "magnitude": 0.3,
        "probability": 1.0,
        "strength": 9.0,
        **{"unit": "degrees, either way"},
    }


def test_a_learned_policy_moves_every_magnitude_and_probability_at_its_own_rate():
    model = build(policy_lr=0.05)
    groups = model.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == [model.hp["lr"], 0.05]
    before = [p.detach().clone() for p in model.policy.parameters()]
    adam_steps(model)
    for b, p in zip(before, model.policy.parameters()):
        assert ((p.detach() - b).abs() > 1e-3).all(), p.detach() - b


# ---- test-time augmentation -----------------------------------------------------------------------------------


def test_test_time_augmentation_is_a_function_of_the_episode_support_set_alone():
    model = build(policy="fixed")
    adam_steps(model)  # batch norm's running statistics are no longer the initial ones
    model.eval()
    ep = episodes(b=3, seed=9)
    with torch.no_grad():
        together = model.predict_episodes(ep)
        assert torch.equal(together, model.predict_episodes(ep))  # same episode, same answer
        for i in range(3):  # whatever else shares the batch
            alone = model.predict(ep.support_x[i : i + 1], ep.support_y[i : i + 1], ep.query_x[i : i + 1], ep.ways)
            assert torch.allclose(together[i : i + 1], alone, rtol=1e-9, atol=1e-10), i
        other_queries = ep.query_x.clone()
        other_queries[:, 1:] = torch.randn_like(other_queries[:, 1:])
        changed = model.predict(ep.support_x, ep.support_y, other_queries, ep.ways)
    assert torch.equal(changed[:, 0], together[:, 0])  # a query's answer does not depend on the other queries
    assert not torch.allclose(changed[:, 1:], together[:, 1:])


def test_test_time_copies_are_augmented_and_seeded_by_the_support_set():
    model = build(policy="fixed").eval()
    ep = episodes(b=2, seed=4)
    with torch.no_grad():
        sx, _ = model.expand(ep.support_x, ep.support_y)
    s = TASK.ways * TASK.shots
    originals = ep.support_x.repeat_interleave(2, 1)
    assert not torch.allclose(sx[:, s:], originals)  # the copies are not the originals
    seeds = support_seeds(ep.support_x, ep.support_y)
    assert seeds == support_seeds(ep.support_x.clone(), ep.support_y.clone()) and seeds[0] != seeds[1]
    shifted = ep.support_x.clone()
    shifted[0, 0] += 1.0
    assert support_seeds(shifted, ep.support_y)[0] != seeds[0]  # another support set, other draws
    model.train()  # in training the draws are fresh every time
    with torch.no_grad():
        a, _ = model.expand(ep.support_x, ep.support_y)
        b, _ = model.expand(ep.support_x, ep.support_y)
    assert not torch.equal(a, b)


def test_hard_gates_apply_an_operation_with_its_probability():
    policy = AugmentPolicy(("brightness",), magnitude=1.0, probability=0.3, learned=False)
    x = torch.zeros(20000, 1, 2, 2, dtype=torch.float64)
    moved = (policy(x, draw(20000, torch.Generator().manual_seed(0)), hard=True) != 0).any(dim=(1, 2, 3))
    assert abs(moved.double().mean().item() - 0.3) < 0.015  # 4.6 standard errors


# ---- recipes, refusals, the policy in the record's checkpoint -------------------------------------------------


def test_caltech101_recipe_needs_no_flags_and_trains_once_for_the_pacs_protocols():
    protocols = ("caltech101-5w1s", *(f"caltech101-to-pacs-{d}-5w1s" for d in ("photo", "art-painting", "sketch")))
    _, protos, cls, hp, recipe, _ = runner.plan(RunConfig("meta-augment", protocols))
    assert cls is MetaAugment and recipe.name == "meta-augment:caltech101" and len(protos) == 4
    assert hp["policy"] == "learned" and hp["copies"] == 4
    _, _, cls, hp, recipe, _ = runner.plan(RunConfig("meta-augment-fixed", protocols))
    assert cls is MetaAugmentFixed and recipe.name == "meta-augment-fixed:caltech101" and hp["copies"] == 4
    assert "policy" not in hp and "policy_lr" not in hp  # nothing to learn, nothing to set for learning
    _, _, _, hp, recipe, _ = runner.plan(RunConfig("meta-augment", ("omniglot-5w1s",), hparams={"policy": "fixed"}))
    assert recipe.name == "meta-augment:omniglot" and hp["train_ways"] == 60 and hp["policy"] == "fixed"


@pytest.mark.parametrize(
    "hparam,needle",
    [
        ("ops=rotate,flip", "unknown flip"),
        ("policy=random", "not one of learned, fixed"),
        ("probability=1.0", "strictly inside (0, 1)"),
        ("copies=0", "copies=0 must be at least 1"),
        ("temperature=0", "must be positive"),
    ],
)
def test_cli_refuses_bad_policy_settings_before_any_data(hparam, needle, tmp_path, capsys):
    assert needle in refused_before_data(["--method", "meta-augment", "--hparam", hparam], tmp_path, capsys)


def test_the_learned_policy_is_read_back_from_the_run_checkpoint(tmp_path):
    model = build()
    adam_steps(model, 2)
    path = tmp_path / "run-seed0.pt"
    save_checkpoint(model, model.hp, path, "meta-augment", "caltech101-5w1s", 1, 0)
    read = policy_in_checkpoint(str(path))
    assert read["policy"] == "learned" and read["copies"] == 2 and read["seed"] == 0
    assert read["ops"] == model.record_extra()["ops"] != build().record_extra()["ops"]


def test_the_record_carries_the_policy_of_the_model_scored():
    model = build()
    adam_steps(model, 2)
    extra = episodic_training.method_extra(model)  # what train() adds to each run after model selection
    assert extra == {"method_extra": model.record_extra()}
    assert set(extra["method_extra"]["ops"]) == set(OPS) and extra["method_extra"]["policy"] == "learned"


# ---- learning real data ---------------------------------------------------------------------------------------
# Measured on the 2-core CPU (one thread), 50 test episodes of omniglot-5w1s after 60 steps of 20-way training
# with 2 copies: 0.76 trained against 0.44 untrained (0.74 with policy_lr 1e-2, 0.71 with policy=fixed), about
# 9 s of CPU time with the dataset loaded.
LEARNS = {"backbone": "small", "train_ways": 20, "copies": 2}


@pytest.mark.integration
def test_meta_augment_learns_omniglot(data_dir):
    trained, untrained = learning_scores("meta-augment", 60, LEARNS, data_dir)
    assert trained > 0.40 and trained > untrained + 0.10, f"trained {trained:.3f}, untrained {untrained:.3f}"
