"""The meta-continual learners (oml, anml) on tiny backbones and synthetic trajectories: the meta-gradient equals
a plain torch.autograd loop written here, it is second order (finite differences agree with it and not with
the first-order one), online learning leaves the fixed networks alone, and meta-training learns."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from episodekit import SmoothMlp, TinyBackbone
from torch import nn
from torch.func import functional_call

import baselines  # noqa: F401  (registers the methods)
from benchmark.methods import ALGORITHMS, BACKBONES, HParamError, TaskInfo
from benchmark.methods.continual import Trajectory

METHODS = ("oml", "anml")
N_TRAIN, WAYS, SIZE = 6, 4, 28
# the weights that never learn online: OML's representation, ANML's neuromodulatory network
FIXED = {"oml": ("features.",), "anml": ("nm.", "gate.")}
PLN = {"oml": ("hidden.", "head."), "anml": ("features.", "head.")}


def build(method: str, backbone: type = TinyBackbone, dtype=torch.float64, **hp):
    BACKBONES.register("metacontinual-test", backbone)
    try:
        extra = {"pln_hidden": 5} if method == "oml" else {}
        model = ALGORITHMS.get(method)(
            TaskInfo(WAYS, 0, 0, SIZE, 1, N_TRAIN), backbone="metacontinual-test", **{**extra, **hp}
        )
    finally:
        BACKBONES.unregister("metacontinual-test")
    model.log_dict = lambda *a, **k: None  # outside a Trainer there is nothing to log to
    return model.to(dtype)


def trajectory(classes: list[int], images: int, remember: int, seed: int = 0, dtype=torch.float64) -> Trajectory:
    """Each class a fixed coarse 4x4 pattern (it survives TinyBackbone's pooling), upsampled, plus noise."""
    protos = torch.randn(N_TRAIN, 1, 4, 4, generator=torch.Generator().manual_seed(123), dtype=dtype)
    protos = F.interpolate(protos, size=SIZE, mode="nearest")
    g = torch.Generator().manual_seed(seed)
    inner_y = torch.tensor(classes).repeat_interleave(images)
    rand_y = torch.randint(0, N_TRAIN, (remember,), generator=g)

    def images_of(y):
        return protos[y] + 0.5 * torch.randn(len(y), 1, SIZE, SIZE, generator=g, dtype=dtype)

    inner_x = images_of(inner_y)
    return Trajectory(inner_x, inner_y, torch.cat([inner_x, images_of(rand_y)]), torch.cat([inner_y, rand_y]))


def reference_meta_loss(model, traj: Trajectory, create_graph: bool = True) -> torch.Tensor:
    """The outer loss written out: one torch.autograd.grad SGD step per inner image on explicit PLN weights."""
    lr, k = model.hp["inner_lr"], len(traj.inner_y)
    head = ("pretrain_head.weight", "pretrain_head.bias")
    if model.name == "oml":
        w = {n: p for n, p in model.named_parameters() if n.startswith(("hidden.", "pretrain_head."))}
        feats = model.features(torch.cat([traj.inner_x, traj.outer_x]))  # batch statistics of the whole trajectory

        def logits(w, i):  # rows i of the trajectory's images
            z = F.relu(F.linear(feats[i], w["hidden.weight"], w["hidden.bias"]))
            return F.linear(z, *(w[n] for n in head))
    else:
        w = {n: p for n, p in model.named_parameters() if n.startswith(("features.", "pretrain_head."))}
        images = torch.cat([traj.inner_x, traj.outer_x])

        def logits(w, i):  # image by image: each alone in its batch, so normalised by its own statistics
            rows = []
            for j in i.tolist():
                x = images[j : j + 1]
                mask = torch.sigmoid(model.gate(model.nm(x)))
                body = {n.removeprefix("features."): v for n, v in w.items() if n.startswith("features.")}
                rows.append(F.linear(functional_call(model.features, body, (x,)) * mask, *(w[n] for n in head)))
            return torch.cat(rows)

    for i in range(k):
        loss = F.cross_entropy(logits(w, torch.tensor([i])), traj.inner_y[i : i + 1])
        grads = torch.autograd.grad(loss, list(w.values()), create_graph=create_graph)
        w = {n: p - lr * g for (n, p), g in zip(w.items(), grads)}
    return F.cross_entropy(logits(w, torch.arange(k, k + len(traj.outer_y))), traj.outer_y)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_meta_gradient_equals_a_plain_autograd_loop(method, first_order):
    torch.manual_seed(0)
    model = build(method, inner_lr=0.3)
    names, params = zip(*((n, p) for n, p in model.named_parameters() if not n.startswith("head.")))
    for seed, classes in ((1, [2]), (2, [0, 4])):
        traj = trajectory(classes, 3, 5, seed=seed)
        loss, _ = model.meta_loss(traj, first_order=first_order)
        ref = reference_meta_loss(model, traj, create_graph=not first_order)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
        got = torch.autograd.grad(loss, params, allow_unused=True)
        want = torch.autograd.grad(ref, params, allow_unused=True)
        scale = max(a.abs().max().item() for a in want if a is not None)
        for name, a, b in zip(names, got, want):
            assert (a is None) == (b is None), name
            if a is not None:
                # a conv bias before normalisation has a zero gradient in exact arithmetic: rounding noise there
                torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9 * scale, msg=name)
        fixed = [g for n, g in zip(names, got) if n.startswith(FIXED[method])]
        assert fixed and all(g is not None for g in fixed), "the fixed part is outside the meta-gradient"
        assert sum(g.abs().sum() for g in fixed) > 0


@pytest.mark.parametrize("method", METHODS)
def test_second_order_matches_finite_differences_and_first_order_does_not(method):
    """A smooth, batch-norm-free model in float64: the outer loss's derivative in weights of the fixed part (the
    representation / the neuromodulatory network) by central differences is the second-order meta-gradient;
    dropping the inner gradients' dependence on those weights changes it measurably."""
    torch.manual_seed(0)
    model = build(method, backbone=SmoothMlp, inner_lr=0.5)
    traj = trajectory([1, 3], 3, 6, seed=3)
    weight = model.features.net[1].weight if method == "oml" else model.nm.net[1].weight
    second = torch.autograd.grad(model.meta_loss(traj, first_order=False)[0], weight)[0]
    first = torch.autograd.grad(model.meta_loss(traj, first_order=True)[0], weight)[0]
    eps = 1e-5
    for idx in ((0, 0), (2, 300), (5, 500)):
        with torch.no_grad():
            weight[idx] += eps
            up = model.meta_loss(traj)[0].item()
            weight[idx] -= 2 * eps
            down = model.meta_loss(traj)[0].item()
            weight[idx] += eps
        fd = (up - down) / (2 * eps)
        assert second[idx].item() == pytest.approx(fd, rel=1e-7)  # measured: 1e-9 or closer
        # the second-order term is a sizeable part of the derivative, far beyond the finite differences' error
        assert abs(first[idx].item() - fd) > 0.3 * abs(fd)  # measured: 0.6 to 3 times it


@pytest.mark.parametrize(
    ("method", "hp", "learns"),
    [("oml", {}, PLN["oml"]), ("oml", {"pln_hidden": 0}, ("head.",)), ("anml", {}, PLN["anml"])],
)
def test_observe_learns_the_prediction_network_only(method, hp, learns):
    model = build(method, **hp).eval()  # the harness keeps the continual phase in eval mode
    model.begin_continual()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    traj = trajectory([0, 1, 2], 1, 0, seed=4)
    for i in range(3):
        model.observe(traj.inner_x[i : i + 1], torch.tensor([i]), seen=i + 1)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "observe learned nothing"
    # the fixed networks, the background output layer and the batch-norm statistics are untouched, and both the
    # PLN's body and its output layer learn
    assert {k.split(".")[0] + "." for k in changed} == set(learns), sorted(changed)
    # the output units of classes not seen yet keep their reset values (zero)
    assert model.head.weight[3:].abs().sum() == 0 and model.head.bias[3:].abs().sum() == 0
    pln = {id(p) for n, p in model.named_parameters() if n.startswith(learns)}
    assert {id(p) for p in model.online_parameters()} == pln


@pytest.mark.parametrize("method", METHODS)
def test_meta_training_lowers_the_outer_loss_and_reaches_every_fixed_weight(method):
    torch.manual_seed(0)
    wide = {"pln_hidden": 16} if method == "oml" else {}
    model = build(method, dtype=torch.float32, lr=1e-2, inner_lr=0.1, **wide).train()
    held = [trajectory([c], 4, 12, seed=100 + c, dtype=torch.float32) for c in range(N_TRAIN)]

    def held_loss() -> float:
        probe = copy.deepcopy(model)  # a trajectory resets its class's output rows: do it on a copy
        losses = []
        for t in held:
            probe.reset_rows(probe.pretrain_head, t.inner_y.unique())
            losses.append(probe.meta_loss(t)[0].item())
        return sum(losses) / len(losses)

    start = held_loss()
    opt = model.configure_optimizers()
    fixed = [(n, p) for n, p in model.named_parameters() if n.startswith(FIXED[method])]
    for step in range(40):
        opt.zero_grad()
        model.training_step(trajectory([step % N_TRAIN], 4, 12, seed=step, dtype=torch.float32), step).backward()
        for n, p in fixed:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert model.head.weight.grad is None  # the continual head takes no part in meta-training
        opt.step()
    assert held_loss() < 0.85 * start  # measured: 0.76 (oml) and 0.59 (anml) of it


@pytest.mark.parametrize("method", METHODS)
def test_a_trajectory_starts_its_classes_output_units_afresh(method):
    model = build(method)
    with torch.no_grad():
        model.pretrain_head.weight.fill_(1.0)
        model.pretrain_head.bias.fill_(1.0)
    seen = []
    model.adapt = lambda fast, h, y, create_graph: seen.append(fast["pretrain_head.weight"].detach().clone()) or fast
    model.training_step(trajectory([1, 4], 2, 3), 0)
    rows = seen[0]
    assert rows[[1, 4]].abs().sum() == 0 and (rows[[0, 2, 3, 5]] == 1).all()
    assert model.pretrain_head.bias[[1, 4]].abs().sum() == 0


def test_kaiming_reset_and_bad_hyper_parameters():
    model = build("oml", reset="kaiming", pln_hidden=400)
    model.begin_continual()
    w = model.head.weight
    assert model.head.bias.abs().sum() == 0
    assert w.std().item() == pytest.approx((2 / 400) ** 0.5, rel=0.1)
    with pytest.raises(HParamError, match="reset='sometimes'"):
        build("anml", reset="sometimes")

    class Foreign(nn.Module):  # normalises with running statistics whatever it is asked
        def __init__(self, in_channels, image_size, running_stats=True):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
            self.out_dim = 4 * (image_size - 2) ** 2

        def forward(self, x):
            return self.net(x)

    with pytest.raises(HParamError, match="BatchNorm2d layers"):
        build("anml", backbone=Foreign)


def test_registered_with_the_papers_numbers():
    for method, at600 in (("oml", 55.0), ("anml", 64.0)):
        cls = ALGORITHMS.get(method)
        assert cls.pretraining == "trajectories"
        assert cls.PAPER_RESULTS["omniglot-oml-stream"].mean == pytest.approx(at600)
