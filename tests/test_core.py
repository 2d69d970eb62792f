"""Fast unit tests on synthetic data: registry, statistics, result records, episode samplers,
fixed test episodes, the algorithm contract and the built-in methods' numerics."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from episodekit import random_episodes
from scipy import stats as st

from benchmark import records as results
from benchmark import settings as harness
from benchmark.algorithms import HParamError, MetaLearner, TaskInfo, prototypes
from benchmark.core.errors import BenchError
from benchmark.core.files import atomic_write_text
from benchmark.core.registry import Registry, UnknownName
from benchmark.data import DataError
from benchmark.episodes import EpisodeSampler, ImageBatchSampler, check_fillable, fixed_episodes, support_order
from benchmark.protocols import PROTOCOLS, EpisodeSpec
from benchmark.records import InvalidRecord, mean_ci
from benchmark.settings import episodic, episodic_training
from benchmark.stats import paired_test

# ---- registry ------------------------------------------------------------------------------------


def test_registry_register_get_and_decorator():
    reg: Registry[object] = Registry("gadget")
    a = object()
    assert reg.register("alpha", a) is a

    @reg.register("beta")
    def beta():
        return 1

    assert reg.get("alpha") is a and reg.get("beta") is beta
    assert list(reg) == ["alpha", "beta"] and len(reg) == 2 and "alpha" in reg and "gamma" not in reg
    reg.register("alpha", a)  # the same object again (a module imported twice) is harmless


def test_registry_rejects_a_second_object_under_a_name():
    reg: Registry[object] = Registry("gadget")
    reg.register("alpha", object())
    with pytest.raises(ValueError, match="gadget 'alpha' is registered twice"):
        reg.register("alpha", object())


def test_registry_unknown_name_says_did_you_mean():
    reg: Registry[int] = Registry("method")
    for name in ("protonet", "maml", "finetune"):
        reg.register(name, 1)
    with pytest.raises(UnknownName) as ei:
        reg.get("protonett")
    msg = str(ei.value)
    assert isinstance(ei.value, KeyError)
    assert msg.startswith("unknown method 'protonett'.")  # plain text, not KeyError's quoted repr
    assert "Did you mean 'protonet'?" in msg and "Known: finetune, maml, protonet" in msg
    with pytest.raises(UnknownName) as ei:
        reg.get("zzzzzzzz")
    assert "Did you mean" not in str(ei.value)


# ---- statistics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 10, 37, 600])
def test_mean_ci_matches_scipy_t_interval(n):
    rng = np.random.default_rng(n)
    x = rng.beta(5, 2, size=n)
    ci = mean_ci(x)
    lo, hi = st.t.interval(0.95, n - 1, loc=x.mean(), scale=st.sem(x))
    assert ci.n == n
    assert ci.mean == pytest.approx(x.mean(), abs=1e-12)
    assert ci.std == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert ci.low == pytest.approx(lo, abs=1e-12) and ci.high == pytest.approx(hi, abs=1e-12)
    assert ci.ci95 == pytest.approx((hi - lo) / 2, rel=1e-10)


def test_mean_ci_other_level_and_single_value():
    x = np.random.default_rng(1).random(20)
    lo, hi = st.t.interval(0.99, 19, loc=x.mean(), scale=st.sem(x))
    assert mean_ci(x, level=0.99).ci95 == pytest.approx((hi - lo) / 2, rel=1e-10)
    one = mean_ci([0.7])
    assert one.mean == 0.7 and one.n == 1 and math.isnan(one.ci95) and math.isnan(one.std)


@pytest.mark.parametrize("bad", [[], [0.5, float("nan")], [0.5, float("inf")], [[0.1, 0.2]]])
def test_mean_ci_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        mean_ci(bad)


@pytest.mark.parametrize("n", [8, 30, 200])
def test_paired_test_matches_scipy(n):
    rng = np.random.default_rng(100 + n)
    a = rng.random(n)
    b = a - 0.05 + 0.1 * rng.standard_normal(n)
    res = paired_test(a, b)
    assert res.n == n
    assert res.mean_diff == pytest.approx(float(np.mean(a - b)), abs=1e-12)
    assert res.t_pvalue == pytest.approx(st.ttest_rel(a, b).pvalue, rel=1e-10)
    assert res.wilcoxon_pvalue == pytest.approx(st.wilcoxon(a, b).pvalue, rel=1e-10)


def test_paired_test_identical_and_mismatched():
    a = [0.2, 0.4, 0.6]
    same = paired_test(a, a)
    assert (same.n, same.mean_diff, same.t_pvalue, same.wilcoxon_pvalue) == (3, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="equal-length"):
        paired_test([0.1, 0.2], [0.1, 0.2, 0.3])


# ---- result records ------------------------------------------------------------------------------


class PixelProto(MetaLearner):
    """A parameter-free stand-in method: nearest class mean on raw pixels."""

    name = "pixelproto"
    paper = "test stand-in"

    def predict(self, support_x, support_y, query_x, ways):
        protos = prototypes(support_x.flatten(2), support_y, ways)
        return -torch.cdist(query_x.flatten(2), protos)


@pytest.fixture
def harness_record(make_view, monkeypatch):
    """make(seeds, episodes) -> a record made by harness.run (synthetic data, no training, not written)."""
    proto = PROTOCOLS.get("omniglot-5w1s")

    def fake_prepare_run(protocol, device, n_episodes=None, data_dir=None, built=None, val_episodes=0):
        view = make_view([20 + i % 3 for i in range(12)], label="synthetic/test")
        eps = fixed_episodes(view, protocol.episode_spec, f"{protocol.name}:v{protocol.version}:test", n_episodes)
        return harness.Prepared(protocol, view, view, eps, {"omniglot": "f" * 64})

    monkeypatch.setattr(episodic_training, "prepare_run", fake_prepare_run)

    def make(seeds=(0,), episodes=6):
        record, path = harness.run(
            "pixelproto",
            proto.name,
            seeds=seeds,
            episodes=episodes,
            train_steps=0,
            device="cpu",
            write=False,
            progress=False,
            method_cls=PixelProto,
            log=lambda _m: None,
        )
        assert path is None
        return record

    return make


def check(rec):
    """The whole of a record's checks: the envelope (records) and its setting's section (settings)."""
    results.validate(rec)
    harness.check_record(rec)


def test_schema_loads_from_the_installed_package():
    """`records.schema()` reads records/schema/result-v2.schema.json from the package folder; it must work
    in the editable install the project is developed and tested in (every record write goes through it)."""
    assert results.schema()["$id"] == "metabench/result/v2"
    assert results.schema(1)["$id"] == "metabench/result/v1"  # still read, to migrate old records


def test_schema_accepts_a_harness_record(harness_record):
    rec = harness_record(seeds=(0,), episodes=6)
    check(rec)
    assert rec["runs"][0]["n"] == 6 and rec["summary"]["seed_ci95"] is None
    json.loads(json.dumps(rec))  # plain JSON throughout


def test_schema_rejects_a_missing_field(harness_record):
    rec = harness_record()
    del rec["summary"]
    with pytest.raises(InvalidRecord, match="summary"):
        check(rec)
    rec = harness_record()
    del rec["runs"][0]["episode_accuracies"]
    with pytest.raises(InvalidRecord, match="episode_accuracies"):
        check(rec)


def test_validate_rejects_a_mean_that_does_not_match_its_episodes(harness_record):
    rec = harness_record()
    run = rec["runs"][0]
    run["mean"] = min(1.0, run["mean"] + 0.01) if run["mean"] < 0.99 else run["mean"] - 0.01
    rec["summary"]["mean"] = run["mean"]
    with pytest.raises(InvalidRecord, match="does not match its episode accuracies"):
        check(rec)


def test_validate_rejects_an_n_mismatch(harness_record):
    rec = harness_record()
    rec["runs"][0]["n"] += 1
    with pytest.raises(InvalidRecord, match="n=7 but 6 episode accuracies"):
        check(rec)


def test_validate_rejects_inconsistent_summary_and_seeds(harness_record):
    rec = harness_record(seeds=(0, 1), episodes=4)
    rec["seeds"] = [0, 2]
    with pytest.raises(InvalidRecord, match="seeds"):
        check(rec)
    rec = harness_record(seeds=(0, 1), episodes=4)
    rec["summary"]["n_seeds"] = 3
    with pytest.raises(InvalidRecord, match="n_seeds"):
        check(rec)


def test_write_record_is_atomic_and_refuses_to_overwrite(harness_record, tmp_path):
    rec = harness_record()
    path = results.write_record(tmp_path, rec)
    assert path == tmp_path / "few-shot" / "omniglot-5w1s" / "pixelproto" / f"{rec['run_id']}.json"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind
    assert results.read_record(path) == rec
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        results.write_record(tmp_path, rec)
    assert path.read_bytes() == before


def test_atomic_write_leaves_nothing_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "record.json"

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "{}")
    assert list(target.parent.iterdir()) == []


def test_write_record_refuses_an_invalid_record(harness_record, tmp_path):
    rec = harness_record()
    rec["summary"]["n_seeds"] = 99
    with pytest.raises(InvalidRecord):
        results.write_record(tmp_path, rec)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_run_refuses_to_write_an_inconsistent_section(harness_record, tmp_path, monkeypatch):
    """The envelope is the records layer's to check; the setting's section is checked before writing too."""
    real = episodic.Episodic.run_section

    def off_by_one(self, scored):
        out = real(self, scored)
        out["n"] += 1
        return out

    monkeypatch.setattr(episodic.Episodic, "run_section", off_by_one)
    with pytest.raises(BenchError, match="section is inconsistent"):
        harness.run(
            "pixelproto",
            "omniglot-5w1s",
            episodes=6,
            train_steps=0,
            device="cpu",
            method_cls=PixelProto,
            results_dir=str(tmp_path),
            log=lambda _m: None,
        )
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no record, and no orphan checkpoint


# ---- samplers ------------------------------------------------------------------------------------

COUNTS = [18 + (i * 5) % 9 for i in range(12)]  # 12 classes, 18..26 images each
SPEC = EpisodeSpec(5, 2, 3)


def check_episodes(view, ep, spec, decode_rows, classes=None):
    """Every invariant of a batch of episodes; returns (class ids [B, N], rows [B, N*(K+Q)])."""
    n, k, q = spec.ways, spec.shots, spec.queries
    b = ep.batch_size
    assert ep.support_x.shape[:2] == (b, n * k) and ep.query_x.shape[:2] == (b, n * q)
    assert (ep.ways, ep.shots) == (n, k)
    s_rows, q_rows = decode_rows(ep.support_x), decode_rows(ep.query_x)
    ends = (view.offsets + view.counts).cpu()
    cls_of = lambda rows: torch.searchsorted(ends, rows, right=True)  # noqa: E731
    s_cls, q_cls = cls_of(s_rows), cls_of(q_rows)
    want_sy = torch.arange(n).repeat_interleave(k)
    assert torch.equal(ep.support_y, want_sy.expand(b, -1))  # class-major support, labels 0..N-1
    ids = s_cls.view(b, n, k)
    assert (ids == ids[..., :1]).all()  # K shots of one class per label
    ids = ids[..., 0]
    for e in range(b):
        assert len(set(ids[e].tolist())) == n  # N distinct classes
        assert sorted(ep.query_y[e].tolist()) == sorted(list(range(n)) * q)  # exactly Q per label
        assert torch.equal(q_cls[e], ids[e][ep.query_y[e]])  # a query's label is its class's label
        rows = torch.cat([s_rows[e], q_rows[e]])
        assert len(set(rows.tolist())) == n * (k + q)  # support and query images disjoint
    if classes is not None:
        assert torch.equal(ids, classes)
    return ids, torch.cat([s_rows, q_rows], 1)


def test_episode_sampler_invariants_over_many_batches(make_view, decode_rows):
    view = make_view(COUNTS)
    sampler = EpisodeSampler(view, SPEC)
    g = torch.Generator().manual_seed(0)
    seen_cls, seen_rows, class_major = set(), set(), 0
    for _ in range(8):
        ep = sampler.sample(40, g)
        ids, rows = check_episodes(view, ep, SPEC, decode_rows)
        seen_cls |= set(ids.flatten().tolist())
        seen_rows |= set(rows.flatten().tolist())
        class_major += int((ep.query_y.diff(dim=1) >= 0).all(1).sum())
    assert seen_cls == set(range(len(COUNTS)))
    assert seen_rows == set(range(sum(COUNTS)))  # every image of every class, the last ones included
    assert class_major < 5  # query order is shuffled, not class-major


def test_fixed_episodes_invariants(make_view, decode_rows):
    view = make_view(COUNTS)
    index = fixed_episodes(view, SPEC, "synthetic:v1:test", 300)
    assert len(index) == 300
    assert index.classes.shape == (300, 5) and index.slots.shape == (300, 5, 5) and index.qperm.shape == (300, 15)
    sampler = EpisodeSampler(view, SPEC)
    seen_rows, class_major = set(), 0
    for start in range(0, 300, 64):
        stop = min(start + 64, 300)
        ep = sampler.episodes(index, start, stop)
        _, rows = check_episodes(view, ep, SPEC, decode_rows, classes=index.classes[start:stop])
        # rows recomputed from the index agree with the images gathered
        want = view.offsets[index.classes[start:stop]].unsqueeze(-1) + index.slots[start:stop]
        assert torch.equal(decode_rows(ep.support_x), want[..., :2].flatten(1))
        assert set(decode_rows(ep.query_x).flatten().tolist()) <= set(want[..., 2:].flatten().tolist())
        seen_rows |= set(rows.flatten().tolist())
        class_major += int((ep.query_y.diff(dim=1) >= 0).all(1).sum())
    assert (index.slots < view.counts[index.classes].unsqueeze(-1)).all()
    assert seen_rows == set(range(sum(COUNTS)))
    assert class_major < 5


def test_fixed_episodes_is_a_pure_function_of_the_key(make_view):
    spec = EpisodeSpec(5, 1, 15)
    a = fixed_episodes(make_view(COUNTS), spec, "p:v1:test", 50)
    b = fixed_episodes(make_view(COUNTS), spec, "p:v1:test", 50)  # a separately built view
    for f in ("classes", "slots", "qperm"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert a.fingerprint == b.fingerprint
    for other_key in ("p:v2:test", "q:v1:test", "p:v1:val"):
        c = fixed_episodes(make_view(COUNTS), spec, other_key, 50)
        assert not torch.equal(a.classes, c.classes)
        assert c.fingerprint != a.fingerprint
    d = fixed_episodes(make_view(COUNTS), EpisodeSpec(5, 2, 15), "p:v1:test", 50)
    assert d.fingerprint != a.fingerprint  # the spec is part of what is fingerprinted


def test_fixed_episodes_do_not_depend_on_batching(make_view, decode_rows):
    view = make_view(COUNTS)
    spec = EpisodeSpec(5, 1, 15)
    whole = fixed_episodes(view, spec, "p:v1:test", 40)
    sampler = EpisodeSampler(view, spec)
    for i in (0, 7, 39):
        alone = fixed_episodes(view, spec, "p:v1:test", 1, start=i)
        for f in ("classes", "slots", "qperm"):
            assert torch.equal(getattr(alone, f)[0], getattr(whole, f)[i])
        e1, e2 = sampler.episodes(alone, 0, 1), sampler.episodes(whole, i, i + 1)
        assert torch.equal(e1.support_x, e2.support_x) and torch.equal(e1.query_x, e2.query_x)
        assert torch.equal(e1.query_y, e2.query_y)
    tail = fixed_episodes(view, spec, "p:v1:test", 20, start=20)
    assert torch.equal(tail.classes, whole.classes[20:]) and torch.equal(tail.qperm, whole.qperm[20:])


def test_fixed_episodes_golden(make_view):
    """Frozen output of the test-episode generator: any change to it changes every published number."""
    view = make_view(
        [20 + (i * 7) % 11 for i in range(30)],
        label="golden",
        fingerprint="golden-data",
        class_names=[f"class{i:03d}" for i in range(30)],
    )
    fe = fixed_episodes(view, EpisodeSpec(5, 1, 15), "golden-protocol:v1:test", 3)
    assert fe.classes.tolist() == [[19, 8, 27, 22, 26], [22, 23, 16, 2, 17], [19, 18, 20, 1, 15]]
    assert fe.slots[0, 0].tolist() == [4, 5, 11, 19, 14, 13, 17, 20, 2, 12, 8, 9, 10, 16, 7, 0]
    assert fe.qperm[0, :10].tolist() == [4, 68, 61, 62, 32, 65, 3, 60, 28, 47]
    assert fe.fingerprint.startswith("c55a1325c80205414a5c0af78c87")


def test_shuffled_support_is_the_same_episode_in_a_fixed_order(make_view, decode_rows):
    """Sequence readers get the support in a shuffled order that is a pure function of the episode: the same
    images and labels as the class-major layout, the same order for every call and batching, frozen
    integers (so every sequence reader, on every machine, sees the same sequence), and an order that says
    nothing about the labels."""
    view = make_view(COUNTS)
    spec = EpisodeSpec(5, 3, 4)
    index = fixed_episodes(view, spec, "p:v1:test", 200)
    plain, shuffled = EpisodeSampler(view, spec), EpisodeSampler(view, spec, shuffle_support=True)
    a, b = plain.episodes(index, 0, 200), shuffled.episodes(index, 0, 200)
    assert torch.equal(a.query_x, b.query_x) and torch.equal(a.query_y, b.query_y)
    ra, rb = decode_rows(a.support_x), decode_rows(b.support_x)
    for e in range(200):  # the same (image, label) pairs, reordered
        assert sorted(zip(ra[e].tolist(), a.support_y[e].tolist())) == sorted(
            zip(rb[e].tolist(), b.support_y[e].tolist())
        )
    one = shuffled.episodes(fixed_episodes(view, spec, "p:v1:test", 1, start=17), 0, 1)
    assert torch.equal(one.support_y[0], b.support_y[17]) and torch.equal(one.support_x[0], b.support_x[17])
    # not class-major, and each label equally likely at each position (no position predicts a label)
    assert int((b.support_y.diff(dim=1) >= 0).all(1).sum()) < 3
    first = torch.bincount(b.support_y[:, 0], minlength=5).float()
    assert first.min() > 20 and first.max() < 60  # 200 episodes, 40 expected per label
    order = support_order(index.classes[:2], index.slots[:2], 3)
    assert order.tolist() == GOLDEN_ORDER
    g = torch.Generator().manual_seed(0)
    t = shuffled.sample(64, g)  # training episodes too, with no extra random draws
    assert int((t.support_y.diff(dim=1) >= 0).all(1).sum()) < 3
    assert torch.equal(EpisodeSampler(view, spec).sample(64, torch.Generator().manual_seed(0)).query_y, t.query_y)


GOLDEN_ORDER = [
    [5, 12, 14, 1, 9, 10, 7, 3, 13, 0, 2, 8, 4, 11, 6],
    [0, 7, 9, 4, 10, 13, 1, 3, 8, 2, 6, 12, 5, 11, 14],
]


def test_check_fillable_errors(make_view):
    view = make_view([20] * 7, label="pacs/domain=sketch")
    with pytest.raises(DataError) as ei:
        check_fillable(view, EpisodeSpec(20, 1, 15))
    assert "20" in str(ei.value) and "7" in str(ei.value) and "pacs/domain=sketch" in str(ei.value)
    with pytest.raises(DataError):
        EpisodeSampler(view, EpisodeSpec(20, 1, 15))
    short = make_view([20, 20, 9, 20, 20, 20])
    with pytest.raises(DataError) as ei:
        check_fillable(short, EpisodeSpec(5, 1, 15))
    msg = str(ei.value)
    assert "16 images per class" in msg and "smallest: 9" in msg
    with pytest.raises(DataError, match="smallest: 9"):
        fixed_episodes(short, EpisodeSpec(5, 1, 15), "p:v1:test", 3)
    check_fillable(short, EpisodeSpec(6, 4, 5))  # 9 images are enough for 4 + 5


def test_image_batch_sampler_labels_match_rows(make_view, decode_rows):
    view = make_view(COUNTS)
    sampler = ImageBatchSampler(view)
    g = torch.Generator().manual_seed(3)
    ends = view.offsets + view.counts
    seen = set()
    for _ in range(10):
        x, y = sampler.sample(64, g)
        assert x.shape == (64, 2, 2, 2) and x.dtype == torch.float32
        rows = decode_rows(x)
        assert torch.equal(y, torch.searchsorted(ends, rows, right=True))
        seen |= set(y.tolist())
    assert seen == set(range(len(COUNTS)))


# ---- the algorithm contract ----------------------------------------------------------------------

from baselines.finetune import BaselinePP  # noqa: E402
from baselines.maml import MAML  # noqa: E402
from baselines.protonet import ProtoNet  # noqa: E402


def test_unknown_hparam_lists_the_known_ones():
    with pytest.raises(HParamError) as ei:
        ProtoNet.resolve_hparams({"learning_rate": 0.1})
    msg = str(ei.value)
    assert "learning_rate" in msg
    for known in ("lr", "lr_step", "backbone", "meta_batch", "eval_batch"):
        assert known in msg


def test_hparam_strings_are_coerced_to_the_default_type():
    hp = MAML.resolve_hparams(
        {"inner_steps": "5", "inner_lr": "0.01", "first_order": "true", "backbone": "resnet12", "meta_batch": 4}
    )
    assert hp["inner_steps"] == 5 and type(hp["inner_steps"]) is int
    assert hp["inner_lr"] == 0.01 and type(hp["inner_lr"]) is float
    assert hp["first_order"] is True and hp["backbone"] == "resnet12" and hp["meta_batch"] == 4
    for text, want in (("false", False), ("0", False), ("yes", True), ("ON", True)):
        assert MAML.resolve_hparams({"first_order": text})["first_order"] is want
    assert BaselinePP.resolve_hparams({"ft_lr": "1"})["ft_lr"] == 1.0
    assert MAML.resolve_hparams({})["meta_batch"] == 32  # a method's own default overrides the common one
    for bad in ({"inner_steps": "five"}, {"first_order": "maybe"}, {"inner_lr": "fast"}):
        with pytest.raises(HParamError, match="is not a"):
            MAML.resolve_hparams(bad)


def test_prototypes_are_class_means():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    labels = torch.stack([torch.randperm(7, generator=g) % 3 for _ in range(3)])  # shuffled, uneven shots
    got = prototypes(feats, labels, 3)
    assert got.shape == (3, 3, 4)
    for b in range(3):
        for c in range(3):
            assert torch.allclose(got[b, c], feats[b][labels[b] == c].mean(0))
    empty = prototypes(feats, torch.zeros(3, 7, dtype=torch.long), 2)  # a class with no shots -> zeros
    assert torch.count_nonzero(empty[:, 1]) == 0


@pytest.mark.filterwarnings("ignore:.*self.log.*")
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("force_vmap", [True, False])  # vmap, and the task-by-task path MAML takes on a CPU
def test_maml_batched_meta_loss_equals_the_loop(first_order, force_vmap):
    torch.manual_seed(0)
    task = TaskInfo(ways=3, shots=2, queries=2, image_size=16, channels=1, n_train_classes=10)
    model = MAML(task, inner_steps=2, inner_lr=0.3, first_order=first_order).double()
    model.force_vmap = force_vmap
    ep = random_episodes(3, 3, 2, 2, dtype=torch.float64)
    params = [p for p in model.parameters()]
    batched = model.training_step(ep, 0)
    loop = model.loop_meta_loss(ep)
    assert batched.item() == pytest.approx(loop.item(), rel=1e-9, abs=1e-9)
    g_batched = torch.autograd.grad(batched, params)
    g_loop = torch.autograd.grad(loop, params)
    for (name, _), a, b in zip(model.named_parameters(), g_batched, g_loop):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9), name
    assert any(a.abs().sum() > 0 for a in g_batched)


def test_maml_first_and_second_order_gradients_differ():
    torch.manual_seed(0)
    task = TaskInfo(ways=3, shots=2, queries=2, image_size=16, channels=1, n_train_classes=10)
    ep = random_episodes(2, 3, 2, 2, dtype=torch.float64)
    grads = {}
    for fo in (False, True):
        torch.manual_seed(1)
        model = MAML(task, inner_steps=1, first_order=fo).double()
        loss = model.loop_meta_loss(ep)
        grads[fo] = torch.autograd.grad(loss, list(model.parameters()))
    assert not all(torch.allclose(a, b) for a, b in zip(grads[False], grads[True]))


def test_maml_predict_adapts_without_touching_the_weights():
    torch.manual_seed(0)
    task = TaskInfo(ways=3, shots=1, queries=2, image_size=16, channels=1, n_train_classes=10)
    model = MAML(task, eval_inner_steps=2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ep = random_episodes(4, 3, 1, 2)
    with torch.no_grad():
        logits = model.predict_episodes(ep)
    assert logits.shape == (4, 6, 3) and not logits.requires_grad and torch.isfinite(logits).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("cls,hp", [(BaselinePP, {"ft_steps": 3}), (ProtoNet, {})])
def test_predict_shape_under_no_grad(cls, hp):
    torch.manual_seed(0)
    task = TaskInfo(ways=5, shots=2, queries=3, image_size=16, channels=1, n_train_classes=20)
    model = cls(task, **hp).eval()
    ep = random_episodes(2, 5, 2, 3)
    with torch.no_grad():
        logits = model.predict_episodes(ep)
    assert logits.shape == (2, 15, 5) and torch.isfinite(logits).all()


def test_protonet_predict_on_separable_data_is_perfect():
    """Identical support and query images must be classified correctly by nearest prototype."""
    torch.manual_seed(0)
    task = TaskInfo(ways=4, shots=1, queries=1, image_size=16, channels=1, n_train_classes=8)
    model = ProtoNet(task).eval()
    ep = random_episodes(3, 4, 1, 1)
    with torch.no_grad():
        # queries are the support images themselves, permuted as the query labels say
        qx = torch.stack([ep.support_x[b][ep.query_y[b]] for b in range(3)])
        logits = model.predict(ep.support_x, ep.support_y, qx, 4)
    assert torch.equal(logits.argmax(-1), ep.query_y)


@pytest.mark.parametrize("size,channels", [(28, 1), (84, 3)])
def test_resnet12_backbone_feeds_a_method(size, channels):
    from baselines.protonet import ProtoNet
    from benchmark.algorithms import TaskInfo
    from benchmark.backbones import make_backbone

    net = make_backbone("resnet12", channels, size)
    assert net(torch.randn(2, channels, size, size)).shape == (2, 640)
    model = ProtoNet(TaskInfo(5, 1, 2, size, channels, 10), backbone="resnet12").eval()
    sx, sy = torch.randn(1, 5, channels, size, size), torch.arange(5).view(1, 5)
    with torch.no_grad():
        assert model.predict(sx, sy, torch.randn(1, 10, channels, size, size), 5).shape == (1, 10, 5)


def test_an_unwritable_results_folder_fails_before_training(harness_record, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BenchError, match="cannot be written"):
        harness.run(
            "pixelproto",
            "omniglot-5w1s",
            episodes=6,
            train_steps=0,
            device="cpu",
            method_cls=PixelProto,
            results_dir=str(blocker / "results"),
            log=lambda _m: None,
        )


def test_protonet_distance_and_embedding_variants():
    torch.manual_seed(0)
    task = TaskInfo(ways=3, shots=2, queries=2, image_size=16, channels=1, n_train_classes=10)
    ep = random_episodes(2, 3, 2, 2)
    models = {}
    for key, hp in {"paper": {}, "unsq": {"distance": "euclidean"}, "two": {"embed": "separate"}}.items():
        torch.manual_seed(1)
        models[key] = ProtoNet(task, **hp)
    with torch.no_grad():
        # at test time batch norm uses running statistics: one pass or two give the same answer
        for m in models.values():
            m.eval()
        assert torch.allclose(models["two"].predict_episodes(ep), models["paper"].predict_episodes(ep), atol=1e-5)
        for m in models.values():
            m.train()
        paper = models["paper"].predict_episodes(ep)
        assert torch.allclose(models["unsq"].predict_episodes(ep), -(-paper).clamp_min(0).sqrt(), atol=1e-4)
        # in training, one pass normalises support and query together, two passes each on its own
        assert not torch.allclose(models["two"].predict_episodes(ep), paper)
    with pytest.raises(HParamError, match="distance='cosine' is not one of sqeuclidean, euclidean"):
        ProtoNet.resolve_hparams({"distance": "cosine"})
    with pytest.raises(HParamError, match="embed='both' is not one of joint, separate"):
        ProtoNet.resolve_hparams({"embed": "both"})
