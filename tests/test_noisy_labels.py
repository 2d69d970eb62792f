"""The noisy-label setting: the corruption (a pure function of protocol, version and image, at the stated rate,
only on training images), the splits of Caltech-101 (meta and test disjoint), L2RW's and Meta-Weight-Net's
meta-gradients against finite differences of the look-ahead meta loss (float64, a tiny smooth model), every
method end to end through the harness on the real data with a valid record, `bench compare` and `bench verify`
on those records, the page's weights section, and what a method is (not) handed in training."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from episodekit import SmoothMlp, TinyBackbone
from torch.func import functional_call

import baselines  # noqa: F401  (registers the built-in methods)
from baselines.l2rw import L2RW
from baselines.mw_net import MWNet
from benchmark import settings as harness
from benchmark.cli import main
from benchmark.core.errors import BenchError, InvalidRecord
from benchmark.methods import ALGORITHMS, BACKBONES, NoisyBatch, NoisyLearner, TaskInfo
from benchmark.page import board as boards
from benchmark.page import noisy as page
from benchmark.protocols import PROTOCOLS, NoiseSpec, SplitSpec, corrupt, noise_key
from benchmark.records import read_record
from benchmark.run import RunConfig
from benchmark.settings import SETTINGS, load_record
from benchmark.store import load_store
from benchmark.store.views import view_rows

PROTOCOL_NAMES = [
    "caltech101-noisy-sym20",
    "caltech101-noisy-sym40",
    "caltech101-noisy-sym60",
    "caltech101-noisy-flip40",
]
APP = Path(__file__).resolve().parents[1] / "leaderboards" / "app.py"
SMALL = {"backbone": "noisy-tiny", "batch_size": 64, "meta_per_class": 1, "eval_batch": 1024}


@pytest.fixture(scope="module", autouse=True)
def backbones():
    BACKBONES.register("noisy-tiny", TinyBackbone)
    BACKBONES.register("noisy-smooth", SmoothMlp)
    yield
    BACKBONES.unregister("noisy-tiny")
    BACKBONES.unregister("noisy-smooth")


# --- the corruption -------------------------------------------------------------------------------------------


def _synthetic(n_classes=101, per_class=25):
    labels = np.repeat(np.arange(n_classes), per_class)
    images = [f"class{c:03d}/{i}" for c in range(n_classes) for i in range(per_class)]
    return labels, images


@pytest.mark.parametrize("kind,rate", [("symmetric", 0.2), ("symmetric", 0.4), ("symmetric", 0.6), ("pair", 0.4)])
def test_corruption_is_a_pure_function_of_protocol_and_image_at_the_stated_rate(kind, rate):
    labels, images = _synthetic()
    spec = NoiseSpec(kind, rate)
    out = corrupt(spec, "p|v1", labels, images, 101)
    moved = out != labels
    assert all(moved[labels == c].sum() == round(rate * 25) for c in range(101))  # exactly, in every class
    if kind == "pair":
        assert (out[moved] == (labels[moved] + 1) % 101).all()
    else:
        # never the true class, and spread over the other classes (1,515 moves at 60% reach every offset)
        offsets = (out[moved] - labels[moved]) % 101
        assert (offsets != 0).all() and len(set(offsets.tolist())) >= (100 if rate == 0.6 else 80)
    assert np.array_equal(out, corrupt(spec, "p|v1", labels, images, 101))  # deterministic
    # a function of the image, not of its position in the list: shuffled inputs, the same outcome per image
    perm = np.random.default_rng(0).permutation(len(labels))
    shuffled = corrupt(spec, "p|v1", labels[perm], [images[i] for i in perm], 101)
    assert np.array_equal(shuffled, out[perm])
    # another protocol or version moves other images
    assert not np.array_equal(corrupt(spec, "p|v2", labels, images, 101) != labels, moved)


def test_rank_splits_are_validated_and_named():
    s = SplitSpec("caltech101", ranks=("caltech101-noisy-v1", 30, 80))
    assert s.label == "caltech101/caltech101-noisy-v1#30-80"
    for bad in (("x", 5, 5), ("x", -1, 3), ("Not a slug", 0, 3)):
        with pytest.raises(ValueError, match="ranks"):
            SplitSpec("caltech101", ranks=bad)
    with pytest.raises(ValueError, match="rate"):
        NoiseSpec("symmetric", 1.0)
    p = PROTOCOLS.get("caltech101-noisy-sym40")
    assert p.summary()["noise"] == {"kind": "symmetric", "rate": 0.4, "per_class": "exactly round(rate * n)"}
    assert noise_key(p) == "caltech101-noisy-sym40|v1"


@pytest.mark.integration
def test_caltech101_splits_and_corrupted_labels(data_dir):
    from benchmark.settings import noisy_training as nt

    store = load_store("caltech101", 84, 3, str(data_dir))
    sizes = Counter(store.columns["label"].tolist())
    assert len(sizes) == 101 and not any("background" in c.lower() for c in sizes)
    datas = {}
    for name in PROTOCOL_NAMES:
        p = PROTOCOLS.get(name)
        d = datas[name] = nt.prepare(p, torch.device("cpu"), RunConfig("erm", (name,), data_dir=str(data_dir)))
        rows = {
            k: set(view_rows(store, s).tolist()) for k, s in (("train", p.train), ("meta", p.val), ("test", p.test))
        }
        assert not rows["train"] & rows["meta"] and not rows["train"] & rows["test"] and not rows["meta"] & rows["test"]
        assert d.train.counts.tolist() == [25] * 101 and d.meta.counts.tolist() == [5] * 101
        assert d.test.counts.tolist() == [min(50, sizes[c] - 30) for c in d.classes]
        assert len(d.test.images) == 2945 and d.classes == tuple(sorted(sizes))
        true = np.repeat(np.arange(101), 25)
        given = d.labels.numpy()
        assert np.array_equal(given != true, d.corrupted)
        assert all(d.corrupted[true == c].sum() == round(p.noise.rate * 25) for c in range(101))
        if p.noise.kind == "pair":
            assert (given[d.corrupted] == (true[d.corrupted] + 1) % 101).all()
    p, first = PROTOCOLS.get("caltech101-noisy-sym60"), datas["caltech101-noisy-sym60"]  # again: the same labels
    again = nt.prepare(p, torch.device("cpu"), RunConfig("erm", (p.name,), data_dir=str(data_dir)))
    assert again.labels_fingerprint == first.labels_fingerprint and torch.equal(again.labels, first.labels)
    # one test set for all four; each protocol its own corruption
    assert len({d.images_fingerprint for d in datas.values()}) == 1
    assert len({d.labels_fingerprint for d in datas.values()}) == 4


# --- meta-gradients against finite differences ------------------------------------------------------------------


def _batch(seed=0, m=4, ways=3, size=4):
    """Meta images with their labels, and training images that are the same images twice: once with the meta
    label, once with another, so the look-ahead finds some examples helpful and some harmful."""
    g = torch.Generator().manual_seed(seed)
    mx = torch.randn(m, 1, size, size, generator=g, dtype=torch.float64)
    my = torch.randint(ways, (m,), generator=g)
    x, y = torch.cat([mx, mx]), torch.cat([my, (my + 1) % ways])
    return NoisyBatch(x, y, torch.arange(2 * m), mx, my)


def _lookahead_meta_loss(model: NoisyLearner, batch: NoisyBatch, coefficients, lr: float) -> torch.Tensor:
    """The literal look-ahead: L_meta(θ − lr ∇θ Σᵢ cᵢ(ℓ) ℓᵢ(θ)) with plain autograd; `coefficients(losses)` gives
    the cᵢ (L2RW: ε; Meta-Weight-Net: V(ℓ)/B with ℓ as a value)."""
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.network_parameters().items()}
    losses = F.cross_entropy(functional_call(model, params, (batch.x,)), batch.y, reduction="none")
    grads = torch.autograd.grad((coefficients(losses.detach()) * losses).sum(), list(params.values()))
    ahead = {k: p.detach() - lr * g for (k, p), g in zip(params.items(), grads)}
    return F.cross_entropy(functional_call(model, ahead, (batch.meta_x,)), batch.meta_y)


def test_l2rw_weights_are_the_finite_difference_derivative_of_the_lookahead_meta_loss():
    model = L2RW(TaskInfo(3, 0, 0, 4, 1, 3), backbone="noisy-smooth", lookahead_lr=0.5).double()
    batch = _batch()
    g = model.epsilon_gradient(batch)
    h = 1e-6
    fd = []
    for i in range(len(batch.y)):
        e = torch.zeros(len(batch.y), dtype=torch.float64)
        e[i] = h
        plus = _lookahead_meta_loss(model, batch, lambda _l, e=e: e, 0.5)
        minus = _lookahead_meta_loss(model, batch, lambda _l, e=e: -e, 0.5)
        fd.append(((plus - minus) / (2 * h)).item())
    assert torch.allclose(g, torch.tensor(fd, dtype=torch.float64), rtol=1e-6, atol=1e-9), (g, fd)
    assert (g > 0).any() and (g < 0).any()  # the check sees both signs: some examples are clipped
    w = model.example_weights(batch)
    want = torch.clamp(-g, min=0)
    assert torch.allclose(w, want / want.sum() * len(w)) and w.mean().item() == pytest.approx(1.0)


def test_mw_net_meta_gradient_is_the_finite_difference_of_the_lookahead_meta_loss():
    lr = 0.5
    model = MWNet(TaskInfo(3, 0, 0, 4, 1, 3), backbone="noisy-smooth", lookahead_lr=lr, vnet_hidden=6).double()
    batch = _batch(seed=1)
    got = model.weighting_gradient(batch)
    names = list(got)
    flat = torch.cat([got[k].flatten() for k in names])
    base = {k: v.detach().clone() for k, v in model.weighting.named_parameters()}

    def objective(vparams):
        v = lambda losses: functional_call(model.weighting, vparams, (losses,)) / len(losses)
        return _lookahead_meta_loss(model, batch, v, lr).item()

    h, fd = 1e-6, []
    for k in names:
        for j in range(base[k].numel()):
            plus, minus = dict(base), dict(base)
            plus[k] = base[k].flatten().index_add(0, torch.tensor([j]), torch.tensor([h], dtype=torch.float64))
            minus[k] = base[k].flatten().index_add(0, torch.tensor([j]), torch.tensor([-h], dtype=torch.float64))
            plus[k], minus[k] = plus[k].view_as(base[k]), minus[k].view_as(base[k])
            fd.append((objective(plus) - objective(minus)) / (2 * h))
    fd_t = torch.tensor(fd, dtype=torch.float64)
    assert fd_t.abs().max() > 1e-6  # the meta-gradient is not trivially zero
    assert torch.allclose(flat, fd_t, rtol=1e-5, atol=1e-10), (flat, fd_t)


def test_meta_passes_leave_the_running_statistics_alone():
    """Look-ahead passes normalise with the batch's statistics; only the real step may move the running ones."""
    batch = NoisyBatch(*(t.float() if t.is_floating_point() else t for t in dataclasses.astuple(_batch())))
    for cls in (L2RW, MWNet):
        model = cls(TaskInfo(3, 0, 0, 4, 1, 3), backbone="noisy-tiny").train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.example_weights(batch)
        (model.epsilon_gradient if cls is L2RW else model.weighting_gradient)(batch)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), cls.name


# --- end to end on Caltech-101 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_records(data_dir, tmp_path_factory):
    """One record per method on caltech101-noisy-sym40 (2 steps, a tiny backbone), written by the harness."""
    root = tmp_path_factory.mktemp("noisy-results")
    out = {}
    for method in ("erm", "l2rw", "mw-net"):
        record, path = harness.run(
            method,
            "caltech101-noisy-sym40",
            train_steps=2,
            device="cpu",
            data_dir=str(data_dir),
            results_dir=str(root / "results"),
            checkpoint_dir=str(root / "results" / "checkpoints"),
            progress=False,
            hparams={k: v for k, v in SMALL.items() if k in ALGORITHMS.get(method).defaults()},
            log=lambda _m: None,
        )
        out[method] = (record, path)
    return root / "results", out


@pytest.mark.integration
def test_every_method_trains_and_writes_a_valid_record(noisy_records):
    _, records = noisy_records
    for method, (record, path) in records.items():
        assert read_record(path) == record and load_record(path) == record
        assert path.parent.parts[-3:] == ("noisy-labels", "caltech101-noisy-sym40", method)
        p, run = record["protocol"], record["runs"][0]
        assert p["test_images"] == 2945 and p["train_images"] == 2525 and p["meta_images"] == 505
        assert p["corrupted_labels"] == 1010 and p["selection_rule"] == "final" and p["classes"] == 101
        assert len(run["correct"]) == 2945 and run["train_steps"] == 2 and run["selection"] == {"rule": "final"}
        assert record["method"]["recipe"] == f"{method}:caltech101-noisy"
        w = run["label_weights"]
        assert sum(w["corrupted"]) == 1010 and sum(w["clean"]) == 1515
        if method == "erm":  # uniform weighting: every image in the bin of 1, the share on corrupted labels 40%
            assert w["mean_corrupted"] == w["mean_clean"] == 1.0
            assert record["summary"]["weight_corrupted"] == pytest.approx(0.4)
        else:  # weights relative to their batch's mean: over all images they sum to the image count
            assert w["mean_corrupted"] * 1010 + w["mean_clean"] * 1515 == pytest.approx(2525)
    # what the checks refuse: counts that do not cover the training images, a summary share not its runs'
    record = json.loads(json.dumps(records["l2rw"][0]))
    record["runs"][0]["label_weights"]["clean"][3] += 1
    with pytest.raises(InvalidRecord, match="label_weights"):
        SETTINGS.get("noisy-labels").check_record(record)
    record = json.loads(json.dumps(records["l2rw"][0]))
    record["summary"]["weight_corrupted"] = 0.01
    with pytest.raises(InvalidRecord, match="weight_corrupted"):
        SETTINGS.get("noisy-labels").check_record(record)


@pytest.mark.integration
def test_compare_pairs_the_records_image_by_image_and_verify_rescores(noisy_records, data_dir, capsys):
    root, records = noisy_records
    a, b = records["l2rw"][1], records["erm"][1]
    assert main(["compare", str(a), str(b), "--results", str(root)]) == 0
    out = capsys.readouterr().out
    assert "95% CI over 2945 paired test images" in out and "Wilcoxon signed-rank p" in out
    for method in ("l2rw", "mw-net"):  # the weighting net's weights travel with the checkpoint
        path = records[method][1]
        assert main(["verify", str(path), "--sample", "300", "--seed", "1", "--data-dir", str(data_dir)]) == 0


@pytest.mark.integration
def test_the_page_shows_the_weights_and_the_pairs_with_erm(noisy_records):
    root, _ = noisy_records
    board = boards.load_files(root)
    rows = board.table[board.table["setting"] == "noisy-labels"]
    assert sorted(rows["method"]) == ["erm", "l2rw", "mw-net"]
    bins = page.weight_bins(rows, board.records)
    shares = bins.groupby(["entry", "label"])["share"].sum()
    assert np.allclose(shares.to_numpy(), 1.0) and len(shares) == 6
    erm = bins[(bins["entry"].str.startswith("erm")) & (bins["share"] > 0)]
    assert set(erm["bin"]) == {"1–1.1"}  # every image weighs 1
    table = page.weight_table(rows, board.records).set_index("Method")
    assert table.loc["erm", "vs erm (points)"] == "reference"
    assert (
        "Wilcoxon p" in table.loc["l2rw", "vs erm (points)"] and "Wilcoxon p" in table.loc["mw-net", "vs erm (points)"]
    )
    assert (
        page.weight_chart(bins[bins["protocol"] == "caltech101-noisy-sym40"]).to_dict()["spec"]["mark"]["type"] == "bar"
    )


@pytest.mark.integration
def test_the_app_lays_out_the_weights_section_in_the_noisy_labels_tab(noisy_records, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root, _ = noisy_records
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(root))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, at.exception
    tab = at.tabs[[t.label for t in at.tabs].index("noisy-labels")]
    weights = next(d.value for d in tab.dataframe if "Share on corrupted" in d.value.columns)
    assert sorted(weights["Method"]) == ["erm", "l2rw", "mw-net"]
    specs = [json.loads(e.proto.spec) for e in _walk(tab) if e.type == "vega_lite_chart"]
    assert any(spec.get("spec", {}).get("mark", {}).get("type") == "bar" and "facet" in spec for spec in specs)


def _walk(node):
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _walk(child)


# --- what a method is handed ---------------------------------------------------------------------------------


class Spy(NoisyLearner):
    """Records every batch the harness hands it; trains like ERM on the given labels."""

    name = "noisy-spy"
    paper = "test only"
    seen: ClassVar[list] = []

    def example_weights(self, batch):
        self.seen.append(("weights", batch))
        return torch.ones(len(batch.y))

    def training_step(self, batch, batch_idx):
        self.seen.append(("train", batch))
        return self.weighted_step(batch, lambda losses: torch.ones_like(losses))


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["meta", "pooled"])
def test_a_method_sees_given_labels_and_clean_meta_labels_never_the_corruption_or_the_test_set(data_dir, mode):
    from benchmark.settings import noisy_training as nt

    p = PROTOCOLS.get("caltech101-noisy-sym60")
    data = nt.prepare(p, torch.device("cpu"), RunConfig("noisy-spy", (p.name,), data_dir=str(data_dir)))
    cls = type("PooledSpy" if mode == "pooled" else "MetaSpy", (Spy,), {"noisy_labels": mode, "seen": []})
    model = nt.build_model(cls, data, cls.resolve_hparams(SMALL))
    assert model.task == TaskInfo(101, 0, 0, 84, 3, 101)  # no noise rate, no split sizes, nothing of the test set
    trained = nt.train(model, data, RunConfig("noisy-spy", (p.name,), progress=False), 3, 0, torch.device("cpu"))
    assert trained.steps == 3
    kinds = Counter(k for k, _ in cls.seen)
    assert kinds["train"] == 3 and kinds["weights"] == round(2525 / 64)
    meta_labels = torch.repeat_interleave(torch.arange(101), 5)
    pool = torch.cat([data.labels, meta_labels]) if mode == "pooled" else data.labels
    for _, batch in cls.seen:
        assert [f.name for f in dataclasses.fields(batch)] == ["x", "y", "index", "meta_x", "meta_y"]
        assert torch.equal(batch.y, pool[batch.index])  # the labels as given, corrupted ones included
        assert batch.index.max() < len(pool) and batch.x.shape[1:] == (3, 84, 84)
        if mode == "pooled":
            assert batch.meta_x is None and batch.meta_y is None
        else:
            assert batch.meta_x is not None and batch.meta_y.tolist() == list(range(101))  # every class, once
    corrupted_seen = torch.cat([b.index for k, b in cls.seen if k == "train"])
    corrupted_seen = corrupted_seen[corrupted_seen < len(data.labels)]
    assert data.corrupted[corrupted_seen.numpy()].any()  # corrupted labels were handed over as labels, unmarked


def test_the_setting_refuses_methods_that_do_not_take_noisy_batches():
    for method in ("protonet", "mldg"):
        with pytest.raises(BenchError, match="erm, l2rw or mw-net"):
            harness.plan(RunConfig(method, ("caltech101-noisy-sym40",)))
    with pytest.raises(BenchError, match="no label noise"):
        harness.plan(RunConfig("l2rw", ("pacs-dg-photo",)))
    with pytest.raises(BenchError, match="every test image"):
        from benchmark.settings import noisy_training as nt

        nt.prepare(PROTOCOLS.get("caltech101-noisy-sym40"), torch.device("cpu"), RunConfig("erm", episodes=5))
