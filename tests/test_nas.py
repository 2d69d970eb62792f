"""Architecture search on synthetic episodes: both strategies find a planted better operation, the second-order
DARTS hypergradient equals finite differences, a resumed search is the uninterrupted one, and the space and
genotype formats refuse what they cannot build."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from benchmark.core.errors import BenchError
from benchmark.episodes import EpisodeSampler
from benchmark.methods.genotype import Genotype, genotype_from_dict, load_genotype, match_channels, write_genotype
from benchmark.methods.nas_space import DARTS_OPS, SearchSpace, count_params, derive_darts, random_choice
from benchmark.nas import Darts, Objective, SearchConfig, SearchModel, alpha_gradient, resolve_hparams, run_search
from benchmark.nas.objective import mixed
from benchmark.protocols import EpisodeSpec
from benchmark.store import EpisodeView

# one edge, one node, no stem: the edge's operation is the network's only spatial processing
PLANTED = SearchSpace(
    "planted-v1",
    ("none", "skip_connect", "avg_pool_3x3", "max_pool_3x3"),
    nodes=1,
    inputs=1,
    cells=1,
    channels=4,
    stem=False,
)
SPEC = EpisodeSpec(5, 1, 5)


def noisy_view(n_classes: int, seed: int, size: int = 12, noise: float = 120.0, per_class: int = 6) -> EpisodeView:
    """Classes are smooth templates; every image adds strong pixel noise. A 3x3 average removes most of the
    noise and keeps the template, so it is the planted better operation: skip keeps the noise, max-pooling
    amplifies it, none erases everything."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n_classes, 1, 4, 4, generator=g)
    templates = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    images = templates.repeat_interleave(per_class, 0) * 160 + 48
    images = images + noise * torch.randn(n_classes * per_class, 1, size, size, generator=g)
    return EpisodeView(
        f"noisy{seed}",
        images.clamp(0, 255).round().to(torch.uint8),
        torch.arange(n_classes) * per_class,
        torch.full((n_classes,), per_class),
        tuple(f"c{i}" for i in range(n_classes)),
        torch.full((1, 1, 1), 0.5),
        torch.full((1, 1, 1), 0.25),
        f"noisy{seed}",
    )


def planted_search(strategy: str, steps: int, seed: int = 0, **hp):
    cfg = SearchConfig(
        strategy, "protonet", PLANTED, steps, seed, hparams=resolve_hparams(strategy, "protonet", hp), progress=False
    )
    train, val = noisy_view(40, 0), noisy_view(20, 1)
    return run_search(cfg, train, val, SPEC, 1, 12, torch.device("cpu"), lambda: [], log=lambda _m: None)


@pytest.mark.parametrize("order,steps", [(1, 40), (2, 24)])
def test_darts_weights_rise_for_the_planted_operation(order, steps):
    out = planted_search("darts", steps, alpha_lr=0.03, order=order)
    (mixture,) = out.summary["alpha_softmax"].values()
    assert max(mixture, key=mixture.get) == "avg_pool_3x3", mixture
    assert mixture["avg_pool_3x3"] > 0.25 + 0.15  # up from the uniform start, by a margin
    assert out.cell == ((("avg_pool_3x3", 0),),)
    assert out.steps == steps and out.episodes == {"train": 4 * steps, "val": 4 * steps} and out.stopped_by == "steps"


def test_rl_controller_learns_to_sample_the_planted_operation():
    out = planted_search("rl", 60, controller_lr=0.02)
    (probs,) = out.summary["op_probabilities"]
    assert set(probs) == {"skip_connect", "avg_pool_3x3", "max_pool_3x3"}  # 'none' is never sampled
    assert max(probs, key=probs.get) == "avg_pool_3x3", probs
    assert probs["avg_pool_3x3"] > 1 / 3 + 0.2  # up from the uniform start, by a margin
    rewards = [t["reward"] for t in out.trace]
    assert sum(rewards[-15:]) > sum(rewards[:15])  # the cells it samples score better as it learns


def _tiny_problem(objective: str):
    space = SearchSpace("fd-v1", ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3"), nodes=2, cells=1, channels=2)
    torch.manual_seed(0)
    model = SearchModel(space, 1, 6, 3).double()
    obj = Objective(objective, model, {"inner_steps": 1, "inner_lr": 0.3} if objective == "maml" else None)
    view = noisy_view(8, 3, size=6, noise=40.0, per_class=4)
    g = torch.Generator().manual_seed(0)
    sampler = EpisodeSampler(view, EpisodeSpec(3, 1, 2))
    train, val = (sampler.sample(2, g) for _ in range(2))
    train, val = (
        dataclasses.replace(e, support_x=e.support_x.double(), query_x=e.query_x.double()) for e in (train, val)
    )
    alpha = 0.3 * torch.randn(len(space.edges), len(space.ops), dtype=torch.float64)
    return obj, {k: v.detach() for k, v in obj.params().items()}, alpha, train, val


@pytest.mark.parametrize("objective", ["protonet", "maml"])
def test_second_order_hypergradient_equals_finite_differences(objective):
    obj, w, alpha, train, val = _tiny_problem(objective)
    xi = 0.05

    def unrolled_loss(a: torch.Tensor) -> float:  # plain autograd, not torch.func: an independent computation
        p = {k: v.clone().requires_grad_(True) for k, v in w.items()}
        g = torch.autograd.grad(obj(p, mixed(a), train)[0], list(p.values()))
        stepped = {k: v.detach() - xi * gk for (k, v), gk in zip(p.items(), g)}
        return float(obj(stepped, mixed(a), val)[0])

    exact = alpha_gradient(obj, w, alpha, train, val, xi, order=2)
    h = 1e-5
    numeric = torch.zeros_like(alpha)
    for idx in [(0, 2), (1, 1), (2, 3)]:  # a sample of entries: every edge, three operations
        e = torch.zeros_like(alpha)
        e[idx] = h
        numeric[idx] = (unrolled_loss(alpha + e) - unrolled_loss(alpha - e)) / (2 * h)
        assert exact[idx].item() == pytest.approx(numeric[idx].item(), rel=1e-4, abs=1e-8), idx
    first = alpha_gradient(obj, w, alpha, train, val, xi, order=1)
    assert not torch.allclose(first, exact, atol=1e-7)  # the second-order term is really there


def test_a_resumed_search_is_the_uninterrupted_one(tmp_path, monkeypatch):
    hp = resolve_hparams("darts", "protonet", {"alpha_lr": 0.03, "order": 1, "meta_batch": 2})
    train, val = noisy_view(40, 0), noisy_view(20, 1)

    def search(ckpt, resume=False):
        cfg = SearchConfig(
            "darts",
            "protonet",
            PLANTED,
            6,
            0,
            hparams=hp,
            checkpoint=ckpt,
            resume=resume,
            checkpoint_every=0.0,
            progress=False,
        )
        return run_search(cfg, train, val, SPEC, 1, 12, torch.device("cpu"), lambda: [], log=lambda _m: None)

    whole = search(tmp_path / "a.pt")
    real_step, calls = Darts.step, []

    def interrupted(self, *a):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(self, *a)

    monkeypatch.setattr(Darts, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "b.pt")
    monkeypatch.setattr(Darts, "step", real_step)
    with pytest.raises(BenchError, match="--resume continues it"):
        search(tmp_path / "b.pt")  # a leftover checkpoint is never silently overwritten
    resumed = search(tmp_path / "b.pt", resume=True)
    assert resumed.steps == whole.steps == 6 and resumed.episodes == whole.episodes
    assert resumed.summary == whole.summary and [t["loss"] for t in resumed.trace] == [t["loss"] for t in whole.trace]
    with pytest.raises(BenchError, match="checkpoint of another search"):
        other = SearchConfig("darts", "protonet", PLANTED, 7, 0, hparams=hp, checkpoint=tmp_path / "b.pt", resume=True)
        run_search(other, train, val, SPEC, 1, 12, torch.device("cpu"), lambda: [], log=lambda _m: None)


def test_derivation_keeps_the_strongest_edges_and_never_none():
    space = SearchSpace("d-v1", DARTS_OPS, nodes=3, inputs=2)
    w = torch.full((len(space.edges), len(space.ops)), 0.01)
    w[:, 0] = 0.9  # 'none' strongest everywhere: ignored
    w[space.edges.index((3, 0)), space.ops.index("sep_conv_5x5")] = 0.5
    w[space.edges.index((3, 2)), space.ops.index("skip_connect")] = 0.4
    w[space.edges.index((3, 1)), space.ops.index("max_pool_3x3")] = 0.3
    cell = derive_darts(space, w)
    assert len(cell) == 3 and len(cell[0]) == 1 and all(len(n) == 2 for n in cell[1:])
    assert cell[2] == (("sep_conv_5x5", 0), ("skip_connect", 2))
    assert all(op != "none" for node in cell for op, _ in node)
    cells = {random_choice(space, torch.Generator().manual_seed(s)) for s in range(20)}
    assert len(cells) > 15  # random search draws many cells
    assert all(
        i < j and len({i for _, i in node}) == len(node) for c in cells for j, node in enumerate(c, 1) for _, i in node
    )


def test_genotype_file_round_trip_and_refusals(tmp_path):
    cell = ((("sep_conv_3x3", 0),), (("avg_pool_3x3", 0), ("dil_conv_3x3", 1)))
    g = Genotype("t-omniglot-v1", "darts-fewshot-v1", DARTS_OPS, cell, 2, 8, search={"seed": 3})
    path = write_genotype(g, tmp_path / "t-omniglot-v1.json")
    back = load_genotype(path)
    assert back == g and back.fingerprint == g.fingerprint and back.search == {"seed": 3}
    with pytest.raises(BenchError, match="never overwritten"):
        write_genotype(g, path)
    net = back.build(1, 28)
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, net.out_dim) and net.out_dim == 2 * 8 * 7 * 7
    raw = json.loads(path.read_text())
    raw["architecture"]["channels"] = 9  # edited without a new name
    with pytest.raises(BenchError, match="does not match its fingerprint"):
        genotype_from_dict(raw, "edited")
    bad = {**raw, "architecture": {**raw["architecture"], "cell": [[["sep_conv_3x3", 1]]]}}
    with pytest.raises(BenchError, match="reads node 1"):
        genotype_from_dict(bad, "cyclic")
    with pytest.raises(BenchError, match="must be lower-case"):
        genotype_from_dict({**raw, "name": "Bad Name"}, "named")
    with pytest.raises(BenchError, match="unknown operation"):
        SearchSpace("x-v1", ("conv_7x7",))


def test_channels_are_matched_to_a_reference_size():
    g = Genotype("m-v1", "darts-fewshot-v1", DARTS_OPS, ((("sep_conv_3x3", 0),), (("skip_connect", 1),)), 4, 1)
    target = 111_936  # Conv-4 at 28 px, one channel
    c = match_channels(g, target, 1, 28)
    sizes = {k: count_params(lambda k=k: g.with_channels(k, {}).build(1, 28)) for k in (c - 1, c, c + 1)}
    assert abs(sizes[c] - target) <= min(abs(sizes[c - 1] - target), abs(sizes[c + 1] - target))
    assert abs(sizes[c] - target) / target < 0.05
