"""The plain-pre-training continual learners (seq-finetune, joint, er, mer, la-maml) and their shared replay
machinery, on tiny backbones and synthetic data: unit tests on the learners' observe/consolidate."""

from __future__ import annotations

import copy
from statistics import NormalDist

import pytest
import torch
import torch.nn.functional as F

import baselines  # noqa: F401  (registers the methods)
from baselines.replay import Reservoir
from benchmark.methods import ALGORITHMS, BACKBONES, HParamError, TaskInfo
from tests.episodekit import SmoothMlp, TinyBackbone

FIVE = ("seq-finetune", "joint", "er", "mer", "la-maml")


def build(method: str, ways: int = 5, size: int = 4, backbone: type = SmoothMlp, dtype=torch.float32, **hp):
    """A learner in its continual phase (eval mode, fresh stream), with a test backbone registered just to build."""
    BACKBONES.register("continual-test", backbone)
    try:
        model = ALGORITHMS.get(method)(TaskInfo(ways, 0, 0, size, 1, 7), backbone="continual-test", **hp)
    finally:
        BACKBONES.unregister("continual-test")
    model = model.to(dtype).eval()
    model.begin_continual()
    return model


def snapshot(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.online_parameters()]


def data(n: int, ways: int, size: int = 4, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g, dtype=dtype), torch.randint(0, ways, (n,), generator=g)


def loss_grads(model, x, y, seen):
    """The gradient of the cross-entropy over the seen classes, computed independently of the methods' helpers."""
    with torch.enable_grad():
        loss = F.cross_entropy(model(x)[:, :seen], y)
        return torch.autograd.grad(loss, model.online_parameters())


def manual_sgd(model, xs, ys, seen, lr) -> None:
    """One SGD step per example, in order, by hand."""
    for i in range(len(xs)):
        grads = loss_grads(model, xs[i : i + 1], ys[i : i + 1], seen)
        with torch.no_grad():
            for p, g in zip(model.online_parameters(), grads):
                p -= lr * g


def assert_params(model, expected, **tol):
    for p, e in zip(model.online_parameters(), expected):
        torch.testing.assert_close(p.detach(), e, **tol)


# --- the reservoir --------------------------------------------------------------------------------------------------
def offer(buffer: Reservoir, n: int, sizes=(1, 3, 7, 2)) -> None:
    """Offer examples 0..n-1 (x = y = their index) in batches of varying sizes, so a batch can draw a slot twice."""
    i, k = 0, 0
    while i < n:
        b = min(sizes[k % len(sizes)], n - i)
        idx = torch.arange(i, i + b)
        buffer.add(idx.float().unsqueeze(1), idx)
        assert len(buffer) <= buffer.size and buffer.x is not None and len(buffer.x) == buffer.size
        i, k = i + b, k + 1


def test_reservoir_keeps_the_first_examples_then_a_uniform_sample():
    size, n, trials = 5, 40, 1000
    first = Reservoir(size)
    offer(first, size)
    assert first.y is not None and first.y.tolist() == list(range(size)) and first.offered == size
    with pytest.raises(ValueError, match="at least one"):
        Reservoir(0)

    torch.manual_seed(0)
    counts = torch.zeros(n)
    early = 0  # how many of the first `size` examples survive, summed over the trials
    for _ in range(trials):
        buffer = Reservoir(size)
        offer(buffer, n)
        assert buffer.y is not None and len(buffer) == size and len(set(buffer.y.tolist())) == size
        assert torch.equal(buffer.x.squeeze(1).long(), buffer.y)  # images and labels stay paired
        counts[buffer.y] += 1
        early += int((buffer.y < size).sum())
    # each example is kept with probability size/n: Binomial(trials, p) counts; a two-sided bound at a
    # family-wise false-alarm rate of 1e-4 over the n examples
    p = size / n
    z = NormalDist().inv_cdf(1 - 1e-4 / (2 * n))
    sd = (trials * p * (1 - p)) ** 0.5
    assert (counts - trials * p).abs().max() < z * sd, counts
    # the buffer is a uniform size-subset, so the survivors of the first `size` are hypergeometric; this catches
    # the reference code's size/(n+1), which keeps early examples too often
    var = size * p * (1 - p) * (n - size) / (n - 1)
    assert abs(early - trials * size * p) < NormalDist().inv_cdf(1 - 1e-4 / 2) * (trials * var) ** 0.5


def test_reservoir_draws_distinct_examples_and_is_reproducible():
    buffer = Reservoir(6)
    assert buffer.sample(3) is None  # empty
    offer(buffer, 20)
    torch.manual_seed(5)
    x, y = buffer.sample(4)
    torch.manual_seed(5)
    x2, y2 = buffer.sample(4)
    assert len(set(y.tolist())) == 4 and torch.equal(y, y2) and torch.equal(x, x2)
    assert len(buffer.sample(50)[1]) == 6


# --- experience replay ----------------------------------------------------------------------------------------------
def test_er_step_is_sgd_on_the_incoming_batch_with_the_replayed_examples():
    torch.manual_seed(0)
    model = build("er", buffer_size=8, replay_batch=3, online_lr=0.1)
    xs, ys = data(12, 5)
    for i in range(0, 12, 4):
        model.observe(xs[i : i + 4], ys[i : i + 4], 5)
    x, y = data(2, 5, seed=1)
    before = snapshot(model)
    torch.manual_seed(7)
    rx, ry = model.buffer.sample(3)
    joint = loss_grads(model, torch.cat([x, rx]), torch.cat([y, ry]), 5)
    alone = loss_grads(model, x, y, 5)
    assert max((a - b).abs().max() for a, b in zip(joint, alone)) > 1e-3  # the replayed examples matter
    torch.manual_seed(7)
    model.observe(x, y, 5)
    assert_params(model, [p - 0.1 * g for p, g in zip(before, joint)])
    assert model.buffer.offered == 14


def test_er_replay_is_reproducible_under_the_torch_seed():
    xs, ys = data(40, 5)

    def run(seed):
        torch.manual_seed(0)
        model = build("er", buffer_size=6, replay_batch=4)
        torch.manual_seed(seed)
        for i in range(0, 40, 2):
            model.observe(xs[i : i + 2], ys[i : i + 2], 5)
        return snapshot(model), model.buffer.x.clone()

    (p1, b1), (p2, b2), (p3, b3) = run(3), run(3), run(4)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2)) and torch.equal(b1, b2)
    assert not torch.equal(b1, b3) and any(not torch.equal(a, b) for a, b in zip(p1, p3))


# --- MER ------------------------------------------------------------------------------------------------------------
def test_mer_with_one_example_one_batch_and_unit_rates_is_one_sgd_step():
    torch.manual_seed(0)
    model = build("mer", batches_per_example=1, beta=1.0, gamma=1.0, online_lr=0.2)
    x, y = data(1, 5)
    expected = copy.deepcopy(model)
    manual_sgd(expected, x, y, 3, 0.2)
    model.observe(x, y, 3)
    assert_params(model, snapshot(expected))
    assert len(model.buffer) == 1


def test_mer_reptile_rates_interpolate_as_algorithm_1():
    torch.manual_seed(0)
    lr, beta, gamma, s = 0.2, 0.5, 0.3, 2
    model = build("mer", batches_per_example=s, beta=beta, gamma=gamma, online_lr=lr, replay_batch=2)
    xs, ys = data(5, 5)
    model.buffer.add(xs[:4], ys[:4])
    x, y = xs[4:], ys[4:]
    # by hand: s batches of [current, 2 replayed] one SGD step per example, within-batch Reptile at beta,
    # then across-batch Reptile at gamma from where the example began
    hand = copy.deepcopy(model)
    start = snapshot(hand)
    torch.manual_seed(11)
    for _ in range(s):
        rx, ry = model.buffer.sample(2)
        batch_start = snapshot(hand)
        manual_sgd(hand, torch.cat([x, rx]), torch.cat([y, ry]), 5, lr)
        with torch.no_grad():
            for p, p0 in zip(hand.online_parameters(), batch_start):
                p.copy_(p0 + beta * (p - p0))
    expected = [p0 + gamma * (p.detach() - p0) for p, p0 in zip(hand.online_parameters(), start)]
    torch.manual_seed(11)
    model.observe(x, y, 5)
    assert_params(model, expected)
    moved = max((a - b).abs().max() for a, b in zip(expected, start))
    assert moved > 1e-3
    with pytest.raises(HParamError, match="beta"):
        build("mer", beta=1.5)


# --- La-MAML --------------------------------------------------------------------------------------------------------
def lamaml_case(**hp):
    torch.manual_seed(0)
    model = build("la-maml", ways=3, dtype=torch.float64, inner_batches=2, grad_clip=0.0, replay_batch=3, **hp)
    xs, ys = data(10, 3, dtype=torch.float64)
    model.buffer.add(xs[:6], ys[:6])
    return model, xs[6:], ys[6:]


def test_lamaml_meta_gradient_matches_finite_differences_and_needs_second_order():
    model, x, y = lamaml_case()
    torch.manual_seed(3)
    drawn = model.buffer.sample(3)
    bx, by = torch.cat([x, drawn[0]]), torch.cat([y, drawn[1]])
    # alphas far from alpha_init, so that the inner loop moves the weights enough to make second order visible
    g = torch.Generator().manual_seed(4)
    alphas = {n: 0.5 + torch.rand(a.shape, generator=g, dtype=a.dtype) for n, a in model.learning_rates().items()}
    model.alphas = alphas
    g_alpha, g_weight = model.meta_gradients(x, y, 3, drawn)

    def loss_at(a):
        with torch.enable_grad():
            return model.meta_loss(a, x, y, bx, by, 3).detach().item()

    eps = 1e-6
    names = list(alphas)
    checked = []
    for k, name in enumerate(names):
        for flat in (0, alphas[name].numel() - 1):
            plus = {n: t.clone() for n, t in alphas.items()}
            minus = {n: t.clone() for n, t in alphas.items()}
            plus[name].view(-1)[flat] += eps
            minus[name].view(-1)[flat] -= eps
            fd = (loss_at(plus) - loss_at(minus)) / (2 * eps)
            checked.append((fd, float(g_alpha[k].view(-1)[flat])))
    fds = torch.tensor([c[0] for c in checked], dtype=torch.float64)
    autos = torch.tensor([c[1] for c in checked], dtype=torch.float64)
    assert fds.abs().max() > 1e-3  # the check is not vacuous
    torch.testing.assert_close(autos, fds, rtol=1e-5, atol=1e-8)
    # and a weight's meta-gradient, through the inner loop
    w = model.weights()
    first = names[0]
    with torch.no_grad():
        w[first].view(-1)[0] += eps
    up = loss_at(alphas)
    with torch.no_grad():
        w[first].view(-1)[0] -= 2 * eps
    down = loss_at(alphas)
    with torch.no_grad():
        w[first].view(-1)[0] += eps
    torch.testing.assert_close(float(g_weight[0].view(-1)[0]), (up - down) / (2 * eps), rtol=1e-5, atol=1e-8)

    # first order drops the inner gradients' dependence on alpha: no longer the derivative
    model.hp["first_order"] = True
    g_first, _ = model.meta_gradients(x, y, 3, drawn)
    firsts = torch.tensor(
        [float(g_first[k].view(-1)[f]) for k in range(len(names)) for f in (0, -1)], dtype=torch.float64
    )
    assert (firsts - fds).abs().max() > 0.05 * fds.abs().max()


def test_lamaml_updates_alpha_then_weights_by_clipped_alpha():
    model, x, y = lamaml_case(alpha_lr=0.01)
    g = torch.Generator().manual_seed(5)
    # a third of the step sizes well below zero: those weights must not move
    model.alphas = {
        n: torch.where(torch.rand(a.shape, generator=g) < 1 / 3, -1.0, 0.2).to(a)
        for n, a in model.learning_rates().items()
    }
    before, alphas = snapshot(model), {n: a.clone() for n, a in model.alphas.items()}
    torch.manual_seed(9)
    g_alpha, g_weight = model.meta_gradients(x, y, 3, model.replay())
    new_alpha = [a - 0.01 * ga for a, ga in zip(alphas.values(), g_alpha)]
    torch.manual_seed(9)
    model.observe(x, y, 3)
    for a, e in zip(model.alphas.values(), new_alpha):
        torch.testing.assert_close(a, e)
    assert_params(model, [p - a.clamp_min(0) * gw for p, a, gw in zip(before, new_alpha, g_weight)])
    frozen = [(p.detach() == p0)[a < 0] for p, p0, a in zip(model.online_parameters(), before, new_alpha)]
    assert all(f.all() for f in frozen) and sum(f.numel() for f in frozen) > 0
    moved = [(p.detach() != p0)[a > 0] for p, p0, a in zip(model.online_parameters(), before, new_alpha)]
    assert sum(int(m.sum()) for m in moved) > 0
    assert len(model.buffer) == 6 + len(x)
    model.begin_continual()  # a new stream starts alpha afresh
    assert all((a == 0.1).all() for a in model.learning_rates().values())


# --- joint ----------------------------------------------------------------------------------------------------------
def blobs(classes, per_class=20, seed=0):
    """Gaussian blobs in the 16 pixels of a 4x4 image, one per class, linearly separable; their centres share a
    large common component, so both tasks' images excite the same features and a new task's classes, trained
    alone, win on the old task's images too."""
    g = torch.Generator().manual_seed(100)
    centres = 2.0 + torch.randn(4, 16, generator=g)
    g.manual_seed(seed)
    y = torch.tensor(classes).repeat_interleave(per_class)
    x = centres[y] + 0.5 * torch.randn(len(y), 16, generator=g)
    perm = torch.randperm(len(y), generator=g)
    return x[perm].view(-1, 1, 4, 4), y[perm]


def accuracy(model, x, y, seen) -> float:
    with torch.no_grad():
        return float((model.classify(x)[:, :seen].argmax(-1) == y).float().mean())


def test_joint_remembers_a_task_that_sequential_finetuning_forgets():
    a, b = blobs([0, 1], seed=1), blobs([2, 3], seed=2)
    learners = {}
    for name, hp in (("seq-finetune", {}), ("joint", {"joint_epochs": 10})):
        torch.manual_seed(0)
        model = build(name, ways=4, online_lr=0.1, **hp)
        start = snapshot(model)
        for (x, y), seen in ((a, 2), (b, 4)):
            for i in range(0, len(x), 10):
                model.observe(x[i : i + 10], y[i : i + 10], seen)
        if name == "joint":
            assert all(torch.equal(p, q) for p, q in zip(snapshot(model), start))  # observe only stores
            torch.manual_seed(1)
            model.consolidate()
        learners[name] = model
    seq, joint = learners["seq-finetune"], learners["joint"]
    x, y = torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])
    assert accuracy(seq, *b, 4) > 0.9 and accuracy(seq, *a, 4) < 0.3  # learned the second task, forgot the first
    assert accuracy(joint, x, y, 4) > 0.95
    # each consolidation re-fits from the weights of begin_continual: the same draws give the same model
    fitted = snapshot(joint)
    torch.manual_seed(1)
    joint.consolidate()
    assert all(torch.equal(p, q) for p, q in zip(snapshot(joint), fitted))


# --- all five -------------------------------------------------------------------------------------------------------
CHEAP = {"mer": {"batches_per_example": 2, "replay_batch": 3}, "joint": {"joint_epochs": 2}}


@pytest.mark.parametrize("method", FIVE)
def test_learners_pretrain_learn_online_and_classify(method):
    torch.manual_seed(0)
    model = build(method, ways=6, size=28, backbone=TinyBackbone, **CHEAP.get(method, {}))
    model.log_dict = lambda *a, **k: None  # outside a Trainer there is nothing to log to
    model.train()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 7, (8,))
    assert torch.isfinite(model.training_step((x, y), 0))
    model.eval()
    model.begin_continual()
    pretrain_head = [p.detach().clone() for p in model.pretrain_head.parameters()]
    before = snapshot(model)
    # a stream of single images (the OML stream's), then a batch of ten (Split-Omniglot's)
    for i in range(4):
        model.observe(torch.randn(1, 1, 28, 28), torch.tensor([i // 2]), i // 2 + 1)
    model.observe(torch.randn(10, 1, 28, 28), torch.randint(0, 3, (10,)), 3)
    model.consolidate()
    assert any(not torch.equal(p, q) for p, q in zip(snapshot(model), before))
    assert all(torch.equal(p, q) for p, q in zip(model.pretrain_head.parameters(), pretrain_head))
    with torch.no_grad():
        logits = model.classify(torch.randn(5, 1, 28, 28))
    assert logits.shape == (5, 6) and torch.isfinite(logits).all()
