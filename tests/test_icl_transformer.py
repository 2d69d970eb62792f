"""The in-context-learning transformer (icl-transformer): no query label ever enters the model; a query's
answer depends on the support set and on that query alone (not on the other queries, their number, the
support order or the other episodes of the batch); one model answers any ways up to max_ways and refuses
more with a clear error; bad hyper-parameters are refused before any data is loaded; it learns Omniglot."""

from __future__ import annotations

import math

import pytest
import torch
from episodekit import TinyBackbone, learning_scores, random_episodes, refused_before_data

import baselines.icl_transformer  # noqa: F401  (registers icl-transformer)
from baselines.icl_transformer import ICLTransformer, lr_factor, query_mask
from benchmark.algorithms import ALGORITHMS, HParamError, TaskInfo
from benchmark.backbones import BACKBONES

TASK = TaskInfo(ways=5, shots=2, queries=3, image_size=16, channels=1, n_train_classes=10)
SMALL = {"backbone": "tiny", "d_model": 16, "heads": 2, "layers": 2}


@pytest.fixture(scope="module", autouse=True)
def tiny():
    BACKBONES.register("tiny", TinyBackbone)
    yield
    BACKBONES.unregister("tiny")


def build(task=TASK, **hp) -> ICLTransformer:
    torch.manual_seed(0)
    model = ALGORITHMS.get("icl-transformer")(task, **{**SMALL, **hp}).double().eval()
    model.log_dict = lambda *a, **k: None  # outside a Trainer there is nothing to log to
    assert isinstance(model, ICLTransformer)
    return model


def test_the_attention_mask_keeps_queries_apart():
    blocked = query_mask(2, 3)
    allowed = ~blocked
    # support rows: the support only; query rows: the support and themselves
    assert allowed.tolist() == [
        [True, True, False, False, False],
        [True, True, False, False, False],
        [True, True, True, False, False],
        [True, True, False, True, False],
        [True, True, False, False, True],
    ]


def test_query_tokens_never_carry_a_query_label():
    model = build().train()
    ep = random_episodes(2, 5, 2, 3, dtype=torch.float64)
    seen = []
    hook = model.transformer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        for query_y in (ep.query_y, ep.query_y.roll(1, 1), torch.zeros_like(ep.query_y)):
            torch.manual_seed(7)  # the same random label ids each time
            model.training_step(type(ep)(ep.support_x, ep.support_y, ep.query_x, query_y, 5, 2), 0)
    finally:
        hook.remove()
    assert len(seen) == 3 and all(torch.equal(seen[0], t) for t in seen[1:])
    # every query token is its image plus the one "unknown" label embedding (index max_ways)
    model.eval()
    ids = torch.arange(5).expand(2, -1)
    tokens = model.tokens(ep.support_x, ep.support_y, ep.query_x, ids)
    with torch.no_grad():
        images = model.project(model.encoder(ep.query_x.flatten(0, 1))).view(2, 15, -1)
        unknown = model.label_embed.weight[model.max_ways]
        assert torch.allclose(tokens[:, 10:], images + unknown)
        # support tokens carry their label's embedding
        s_images = model.project(model.encoder(ep.support_x.flatten(0, 1))).view(2, 10, -1)
        assert torch.allclose(tokens[:, :10], s_images + model.label_embed(ep.support_y))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_a_query_answer_depends_on_the_support_and_itself_only(dtype, tol):
    model = build().to(dtype)  # float32 in eval under no_grad: torch's fused encoder path, as in scoring
    ep = random_episodes(3, 5, 2, 3, dtype=dtype, seed=1)
    with torch.no_grad():
        logits = model.predict_episodes(ep)
        # fewer queries, in another order: the same answers for those that remain
        keep = torch.tensor([7, 2, 11])
        some = model.predict(ep.support_x, ep.support_y, ep.query_x[:, keep], 5)
        # the support set in another order (no positional encoding: a set model)
        perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
        shuffled = model.predict(ep.support_x[:, perm], ep.support_y[:, perm], ep.query_x, 5)
        # an episode alone, not in a batch of three
        alone = model.predict(ep.support_x[1:2], ep.support_y[1:2], ep.query_x[1:2], 5)
        # but the support's labels do matter: relabelled support, other answers
        relabelled = model.predict(ep.support_x, (ep.support_y + 1) % 5, ep.query_x, 5)
    assert logits.shape == (3, 15, 5)
    assert torch.allclose(some, logits[:, keep], atol=tol)
    assert torch.allclose(shuffled, logits, atol=tol)
    assert torch.allclose(alone, logits[1:2], atol=tol)
    assert not torch.allclose(relabelled, logits, atol=1e-3)


def test_prediction_draws_no_random_numbers():
    model = build()
    ep = random_episodes(2, 5, 2, 3, dtype=torch.float64, seed=2)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model.predict_episodes(ep)
        torch.manual_seed(2)
        b = model.predict_episodes(ep)
    assert torch.equal(a, b)


def test_training_draws_distinct_label_ids_over_the_whole_table():
    model = build(max_ways=8)
    torch.manual_seed(0)
    ids = model.random_ids(500, 5, "cpu")
    assert ids.shape == (500, 5) and ids.min() >= 0 and ids.max() < 8
    assert all(len(set(row)) == 5 for row in ids.tolist())
    assert set(ids.flatten().tolist()) == set(range(8))  # every id is trained, not only 0..ways-1
    # with the identity ids, training's logits are the prediction's
    ep = random_episodes(2, 5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        identity = model.logits(ep.support_x, ep.support_y, ep.query_x, torch.arange(5).expand(2, -1))
        assert torch.allclose(identity, model.predict_episodes(ep))


def test_fewer_ways_than_max_ways_and_refusal_of_more():
    model = build(max_ways=5)
    ep = random_episodes(2, 3, 2, 4, dtype=torch.float64)
    with torch.no_grad():
        logits = model.predict_episodes(ep)
    assert logits.shape == (2, 12, 3) and torch.isfinite(logits).all()
    # a 3-way training step works too (label ids drawn from all 5)
    model.train()
    loss = model.training_step(ep, 0)
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    big = random_episodes(1, 6, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="6 ways, more than max_ways=5"):
        model.predict_episodes(big)
    with pytest.raises(HParamError, match=r"25 ways, more than max_ways=20.*max_ways=25"):
        build(TaskInfo(25, 1, 1, 16, 1, 100), max_ways=20)


def test_a_protocol_with_more_ways_is_refused_before_any_data(tmp_path, capsys):
    from benchmark.protocols import PROTOCOLS

    cls = ALGORITHMS.get("icl-transformer")
    p20 = PROTOCOLS.get("omniglot-20w1s")
    assert cls.training_episodes(cls.resolve_hparams({}), p20).ways == 20  # the default max_ways covers it
    with pytest.raises(HParamError, match="protocol omniglot-20w1s has 20 ways, more than max_ways=10"):
        cls.training_episodes(cls.resolve_hparams({"max_ways": 10}), p20)
    args = ["--method", "icl-transformer", "--protocol", "omniglot-20w1s", "--hparam", "max_ways=10"]
    err = refused_before_data(args, tmp_path, capsys)
    assert "more than max_ways=10" in err and "--hparam max_ways=20" in err


@pytest.mark.parametrize(
    "hp,needle",
    [
        ({"d_model": 30, "heads": 4}, "heads=4 does not divide d_model=30"),
        ({"train_ways": 25}, "train_ways=25 is more than max_ways=20"),
        ({"max_ways": 1}, "max_ways=1 must be at least 2"),
        ({"dropout": 1.0}, "dropout=1.0 must be in [0.0, 0.99]"),
        ({"init": "xavier"}, "init='xavier' is not one of retrieval, default"),
        ({"lr": 0.0}, "a learning rate must be positive"),
        ({"layers": 0}, "layers=0 must be at least 1"),
    ],
)
def test_bad_hyper_parameters_are_named(hp, needle):
    with pytest.raises(HParamError) as ei:
        ALGORITHMS.get("icl-transformer").resolve_hparams(hp)
    assert needle in str(ei.value)


def test_design_declarations_and_retrieval_initialisation():
    assert ICLTransformer.shuffled_support is True
    model = build()
    d = model.hp["d_model"]
    for layer in model.transformer.layers:
        w = layer.self_attn.in_proj_weight
        assert torch.equal(w[:d], w[d : 2 * d])  # W_K = W_Q: a token attends most to tokens like itself
        assert torch.equal(layer.self_attn.out_proj.weight, w[2 * d :].t())  # W_O = W_V^T
        assert layer.norm_first and layer.self_attn.batch_first  # pre-norm
    plain = build(init="default")
    w = plain.transformer.layers[0].self_attn.in_proj_weight
    assert not torch.equal(w[:d], w[d : 2 * d])


def test_warm_up_then_cosine_decay_and_gradient_clipping():
    f = lr_factor(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    assert lr_factor(10, 0)(500) == 1.0  # no known budget: constant after the warm-up
    model = build(grad_clip=0.5, lr=2e-4, weight_decay=0.05).float().train()
    opt = model.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["weight_decay"] == 0.05
    ep = random_episodes(2, 5, 2, 3)
    (model.training_step(ep, 0) * 1e4).backward()
    model.clip_gradients = lambda o, gradient_clip_val, gradient_clip_algorithm: torch.nn.utils.clip_grad_norm_(
        model.parameters(), gradient_clip_val
    )
    model.configure_gradient_clipping(opt)
    norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None))
    assert norm == pytest.approx(0.5, rel=1e-4)


# ---- learns real Omniglot ------------------------------------------------------------------------------
# A small model (d_model 64, 4 heads, 2 layers) on SmallConv: 200 steps of 8 episodes with 2 queries per class
# (as many images per step as 4 episodes with 5), lr 2e-3 after a 30-step warm-up. Measured on the shared 2-core
# CPU: 61.4% trained against 20.0% untrained (seed 0; seeds 1 and 2: 59.1%, 54.5%), 11-22 s for the 200 steps
# depending on the load. With init=default the same run stays at chance (the plateau the retrieval
# initialisation shortens; see the module docstring).
LEARN = (
    200,
    {
        "backbone": "small",
        "d_model": 64,
        "heads": 4,
        "layers": 2,
        "meta_batch": 8,
        "train_queries": 2,
        "lr": 2e-3,
        "warmup_steps": 30,
    },
)


@pytest.mark.integration
def test_icl_transformer_learns_omniglot(data_dir):
    steps, hp = LEARN
    trained, untrained = learning_scores("icl-transformer", steps, hp, data_dir)
    assert trained > 0.40 and trained > untrained + 0.10, f"trained {trained:.3f}, untrained {untrained:.3f}"
