"""Domain generalisation: the PACS leave-one-domain-out protocols, their fixed splits, training-domain model
selection that never sees the target, MLDG's second-order meta-gradient, the record section and its statistics."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from episodekit import SmoothMlp, TinyBackbone
from scipy import stats

import baselines  # noqa: F401  (registers erm and mldg)
from benchmark import settings as harness
from benchmark.core.errors import BenchError
from benchmark.methods import ALGORITHMS, BACKBONES, TaskInfo
from benchmark.protocols import PROTOCOLS, SplitSpec
from benchmark.run import RunConfig
from benchmark.settings import SETTINGS
from benchmark.settings.domains import correctness, wilson
from benchmark.stats.paired import paired_test
from benchmark.store import TensorStore, load_store, split_rows

PACS_DG = ["pacs-dg-art-painting", "pacs-dg-cartoon", "pacs-dg-photo", "pacs-dg-sketch"]

# (rows, sha256 of the rows as little-endian int64)[:16] of each split, on PACS as prepared from PACS.zip.
# A change here changes which images train, select and test: that needs a new protocol version.
GOLDEN = {
    "pacs-dg-art-painting": {
        "train": (6355, "71a57cbd9b7ddd45"),
        "val": (1588, "b52f951892c5a503"),
        "test": (2048, "5ccf19f4f2c0424b"),
    },
    "pacs-dg-cartoon": {
        "train": (6118, "157c047ce6708d78"),
        "val": (1529, "01b0983683f33b3a"),
        "test": (2344, "c79bb6ef44ab9c2d"),
    },
    "pacs-dg-photo": {
        "train": (6656, "0bc3815733cc16ab"),
        "val": (1665, "fd2cfd3566d377f6"),
        "test": (1670, "37bc26864736965d"),
    },
    "pacs-dg-sketch": {
        "train": (4850, "0bd00d8e3a487a66"),
        "val": (1212, "e1b7efc577830104"),
        "test": (3929, "b6d133197b4ccc11"),
    },
}


def digest(rows: np.ndarray) -> str:
    return hashlib.sha256(rows.astype("<i8").tobytes()).hexdigest()[:16]


@pytest.fixture()
def tiny_backbone():
    """TinyBackbone (pool to 4x4, one conv): 84px PACS runs at a fraction of a second per step on the CPU."""
    added = "tiny" not in BACKBONES
    if added:
        BACKBONES.register("tiny", TinyBackbone)
    yield "tiny"
    if added:
        BACKBONES.unregister("tiny")


def test_protocols_and_methods_are_registered():
    for name in PACS_DG:
        p = PROTOCOLS.get(name)
        assert p.setting == "domain-generalisation" and p.episode is None and p.family == "pacs-dg"
        target = dict(p.test.where)["domain"]
        sources = dict(p.train.where)["domain"]
        assert len(target) == 1 and target[0] not in sources and len(sources) == 3
        assert p.val is not None and p.val.holdout is not None and p.val.holdout[2] == "out"
    for name in ("erm", "mldg"):
        cls = ALGORITHMS.get(name)
        assert cls.supports(PROTOCOLS.get("pacs-dg-sketch")) is None
        assert "episodic" in cls.supports(PROTOCOLS.get("omniglot-5w1s"))


def test_an_episodic_method_is_refused_before_any_data_is_loaded():
    with pytest.raises(BenchError, match="episodic learner.*erm or mldg"):
        harness.plan(RunConfig("protonet", ("pacs-dg-sketch",)))


def test_holdout_is_a_fixed_share_of_every_stratum_and_ignores_other_rows():
    labels = np.array(["a"] * 10 + ["b"] * 7 + ["c"] * 3)
    domains = np.array(["x", "y"] * 10)
    store = TensorStore(
        "toy", "fp", torch.zeros(20, 1, 2, 2, dtype=torch.uint8), {"label": labels, "domain": domains}, (0.0,), (1.0,)
    )
    spec = SplitSpec("toy", where=(("domain", ("x", "y")),), holdout=("toy-v1", 0.2, "out"))
    out = split_rows(store, spec)
    rest = split_rows(store, dataclasses.replace(spec, holdout=("toy-v1", 0.2, "in")))
    assert set(out).isdisjoint(rest) and sorted([*out, *rest]) == list(range(20))
    for label in "abc":
        for dom in "xy":
            n = int(((labels == label) & (domains == dom)).sum())
            assert int(((labels[out] == label) & (domains[out] == dom)).sum()) == round(0.2 * n)
    # one domain's split holds exactly the rows of the pooled split in that domain: a per-domain view
    # (as training draws from) is the same images as the protocol's pooled split
    only_x = split_rows(store, dataclasses.replace(spec, where=(("domain", ("x",)),)))
    assert list(only_x) == [r for r in out if domains[r] == "x"]
    assert digest(out) == "eeceabebe2a6d477"  # the hash rule itself is fixed (golden)
    with pytest.raises(ValueError, match="holdout"):
        SplitSpec("toy", holdout=("toy-v1", 1.5, "out"))
    with pytest.raises(ValueError, match="whole degrees"):  # any whole angle is a domain (rotated-omniglot-dg)
        SplitSpec("toy", rotations=(0, 15.5))


@pytest.mark.integration
def test_pacs_splits_are_disjoint_and_stable(data_dir):
    store = load_store("pacs", 84, 3, data_dir)
    domain = store.columns["domain"]
    for name in PACS_DG:
        p = PROTOCOLS.get(name)
        rows = {k: split_rows(store, s) for k, s in (("train", p.train), ("val", p.val), ("test", p.test))}
        assert {k: (len(v), digest(v)) for k, v in rows.items()} == GOLDEN[name], name
        target = dict(p.test.where)["domain"][0]
        assert set(rows["train"]).isdisjoint(rows["val"])
        assert not (domain[rows["train"]] == target).any() and not (domain[rows["val"]] == target).any()
        assert len(rows["test"]) == int((domain == target).sum())  # every target image is tested
        assert len(rows["train"]) + len(rows["val"]) == int((domain != target).sum())


@pytest.mark.integration
def test_no_target_image_reaches_training_or_model_selection(data_dir, tiny_backbone):
    """Scrambling every target image leaves training and the chosen model bit for bit the same; only the
    oracle figure, which is recorded apart, may change."""
    from benchmark.settings import domains_training as dg

    protocol = PROTOCOLS.get("pacs-dg-photo")
    cfg = RunConfig("erm", (protocol.name,), data_dir=str(data_dir), progress=False, val_checks=3)
    data = dg.prepare(protocol, torch.device("cpu"), cfg)
    g = torch.Generator().manual_seed(0)

    def scrambled(view):
        return dataclasses.replace(
            view, images=torch.randint(0, 256, view.images.shape, dtype=torch.uint8, generator=g)
        )

    noisy = dataclasses.replace(
        data, test=scrambled(data.test), oracle_val=scrambled(data.oracle_val), oracle_test=scrambled(data.oracle_test)
    )
    outcomes = []
    for d in (data, noisy):
        torch.manual_seed(0)
        model = dg.build_model(ALGORITHMS.get("erm"), d, {"backbone": tiny_backbone, "batch_size": 8})
        trained = dg.train(model, d, cfg, 9, seed=0, device=torch.device("cpu"))
        outcomes.append((trained.selection, {k: v.clone() for k, v in model.state_dict().items()}))
    (sel_a, state_a), (sel_b, state_b) = outcomes
    for key in ("checked_steps", "val_accuracies", "chosen_step", "val_accuracy"):
        assert sel_a[key] == sel_b[key], key
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert sel_a["oracle"]["val_accuracies"] != sel_b["oracle"]["val_accuracies"]  # the oracle did look


def test_mldg_meta_gradient_is_second_order_and_matches_finite_differences():
    BACKBONES.register("mlp-dg-test", SmoothMlp)
    try:
        torch.manual_seed(0)
        model = ALGORITHMS.get("mldg")(TaskInfo(3, 0, 0, 4, 1, 3), backbone="mlp-dg-test", inner_lr=0.5).double()
    finally:
        BACKBONES.unregister("mlp-dg-test")
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(3, 5, 1, 4, 4, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 3, (3, 5), generator=g)
    params = list(model.parameters())
    loss, _ = model.meta_objective(xs, ys, held_out=1)
    grad = torch.autograd.grad(loss, params)
    # the first-order approximation (DomainBed's): the inner step's gradient taken as a constant
    inner = torch.autograd.grad(model.pooled_loss(model(xs[[0, 2]].flatten(0, 1)), ys[[0, 2]]), params)
    with torch.no_grad():
        for p, gi in zip(params, inner):
            p.sub_(0.5 * gi)
    outer = torch.autograd.grad(model.pooled_loss(model(xs[1]), ys[1]), params)
    with torch.no_grad():
        for p, gi in zip(params, inner):
            p.add_(0.5 * gi)
    first_order = [a + b for a, b in zip(inner, outer)]

    eps = 1e-5
    for trial in range(3):
        v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(params, v):
                    p.add_(sign * eps * d)
            values.append(model.meta_objective(xs, ys, held_out=1)[0].item())
            with torch.no_grad():
                for p, d in zip(params, v):
                    p.sub_(sign * eps * d)
        fd = (values[0] - values[1]) / (2 * eps)
        analytic = sum(float((gr * d).sum()) for gr, d in zip(grad, v))
        approx = sum(float((gr * d).sum()) for gr, d in zip(first_order, v))
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-8), trial
        assert abs(approx - fd) > 1e-4, "the first-order approximation should differ: the test would not see it"


def test_wilson_interval_and_single_seed_ranking_is_mcnemar():
    lo, hi = wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)  # the textbook value
    lo, hi = wilson(50, 100)
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    rng = np.random.default_rng(0)
    a = (rng.random(500) < 0.6).astype(float)
    b = np.where(rng.random(500) < 0.2, 1 - a, a)
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    mcnemar = stats.chi2.sf((only_a - only_b) ** 2 / (only_a + only_b), df=1)
    assert paired_test(a, b).wilcoxon_pvalue == pytest.approx(mcnemar, rel=1e-9)


def _toy_record(correct_runs, oracle=(0.5,)):
    setting = SETTINGS.get("domain-generalisation")
    runs = []
    for seed, (c, o) in enumerate(zip(correct_runs, oracle)):
        from benchmark.settings.base import Scored

        section = setting.run_section(Scored(np.asarray(c, dtype=float), 1.0))
        oracle_block = {"rule": "test-domain validation (oracle)", "chosen_step": 1, "accuracy": o, "images": 4}
        runs.append(
            {"seed": seed, **section, "selection": {"rule": "training-domain validation", "oracle": oracle_block}}
        )
    n = len(correct_runs[0])
    return {
        "protocol": {"name": "pacs-dg-photo", "version": 1, "test_images": n, "images_fingerprint": "f"},
        "runs": runs,
        "summary": setting.summary_section(runs),
    }


def test_record_section_round_trips_and_catches_edits():
    setting = SETTINGS.get("domain-generalisation")
    record = _toy_record([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0]], oracle=(0.5, 0.7))
    assert record["runs"][0]["correct"] == "10110"
    assert list(correctness(record["runs"][1])) == [1, 1, 1, 0, 0]
    assert list(setting.units(record)) == [1, 0.5, 1, 0.5, 0]
    assert record["summary"]["mean"] == pytest.approx(0.6) and record["summary"]["oracle_mean"] == pytest.approx(0.6)
    assert setting.section_problem(record) is None
    edited = {**record, "runs": [{**record["runs"][0], "correct": "11110"}, record["runs"][1]]}
    assert "recorded mean" in setting.section_problem(edited)
    short = {**record, "protocol": {**record["protocol"], "test_images": 6}}
    assert "the protocol has 6" in setting.section_problem(short)
    lied = {**record, "summary": {**record["summary"], "oracle_mean": 0.9}}
    assert "oracle_mean" in setting.section_problem(lied)


@pytest.mark.integration
def test_a_short_real_run_beats_the_majority_class(data_dir, tiny_backbone):
    """ERM on three PACS domains for 150 steps classifies photos (never seen) better than always answering the
    commonest photo class (person, 25.9%), beyond the Wilson interval; measured 36.7% (Wilson 34.4-39.0%) in
    17 s on the 2-core CPU."""
    record, _ = harness.run(
        "erm",
        "pacs-dg-photo",
        train_steps=150,
        val_checks=2,
        hparams={"backbone": tiny_backbone},
        device="cpu",
        data_dir=str(data_dir),
        write=False,
        progress=False,
        log=lambda _m: None,
    )
    run = record["runs"][0]
    assert record["setting"] == "domain-generalisation" and run["n"] == 1670
    assert run["selection"]["rule"] == "training-domain validation"
    assert 0.75 * 1670 < run["selection"]["oracle"]["images"] < 0.85 * 1670  # the oracle scores the other 80%
    majority = 432 / 1670
    assert run["wilson95"][0] > majority, run["mean"]
    assert SETTINGS.get("domain-generalisation").section_problem(record) is None
    assert record["summary"]["ci95"] is not None and not math.isnan(record["summary"]["ci95"])


def dg_record(method: str, target: str, correct_runs, oracle, created="2026-01-01T00:00:00Z") -> dict:
    """A valid domain-generalisation record built with the setting's own section hooks."""
    from benchmark.records import validate
    from benchmark.settings import check_record
    from benchmark.settings.base import Scored

    setting = SETTINGS.get("domain-generalisation")
    p = PROTOCOLS.get(f"pacs-dg-{target}")
    runs = []
    for seed, (c, o) in enumerate(zip(correct_runs, oracle)):
        section = setting.run_section(Scored(np.asarray(c, dtype=float), 1.0))
        oracle_block = {"rule": "test-domain validation (oracle)", "chosen_step": 3, "accuracy": o, "images": 4}
        selection = {"rule": "training-domain validation", "oracle": oracle_block}
        timing = {"train_steps": 10, "train_time_s": 1.0, "eval_time_s": 1.0}
        runs.append({"seed": seed, **section, **timing, "selection": selection})
    summary = p.summary()
    summary.pop("test_episodes")
    record = {
        "schema_version": 2,
        "run_id": f"{method}-{target}",
        "created": created,
        "kind": "evaluation",
        "setting": "domain-generalisation",
        "protocol": {
            **summary,
            "classes": 7,
            "source_domains": ["a", "b", "c"],
            "target_domain": target,
            "val_split": p.val.label,
            "test_images": len(correct_runs[0]),
            "images_fingerprint": f"fp-{target}",
            "selection_rule": "training-domain validation",
        },
        "method": {"name": method, "backbone": "conv4", "hparams": {"lr": 0.001}, "recipe": None},
        "seeds": list(range(len(runs))),
        "runs": runs,
        "summary": {**setting.summary_section(runs), "train_time_s": 1.0, "eval_time_s": 1.0},
        "device": {"type": "cpu", "name": "test-cpu"},
        "environment": {"python": "3.11", "torch": "2.3.0"},
        "code": {"git_commit": "0" * 40, "git_dirty": False},
        "data": {"pacs": "fp"},
    }
    validate(record)
    check_record(record)
    return record


TARGETS = ["art-painting", "cartoon", "photo", "sketch"]


def _populate(results) -> None:
    from benchmark.records import write_record

    rng = np.random.default_rng(0)
    for i, target in enumerate(TARGETS):
        truth = rng.random(400)
        erm = (truth < 0.5).astype(int)  # 50% right
        mldg = (truth < (0.8 if i < 2 else 0.5)).astype(int)  # far better on two targets, equal on the others
        write_record(results, dg_record("erm", target, [erm], [0.6]))
        write_record(results, dg_record("mldg", target, [mldg], [0.9]))


def test_domain_table_has_targets_average_ranks_and_the_oracle_apart(tmp_path):
    from benchmark.page import board as boards
    from benchmark.page.domains import domain_tables

    _populate(tmp_path)
    board = boards.load(tmp_path)
    assert not board.warnings, board.warnings
    rows = board.table[board.table["setting"] == "domain-generalisation"]
    [(family, main, oracle)] = domain_tables(rows, lambda path: board.records[path]["summary"]["oracle_mean"])
    assert family == "pacs-dg"
    assert list(main.columns) == ["Method", "Backbone", *TARGETS, "Average", "Avg. rank", "Targets"]
    assert main["Method"].tolist() == ["mldg", "erm"]
    mldg, erm = main.iloc[0], main.iloc[1]
    assert mldg["art-painting"].endswith("(rank 1)") and erm["art-painting"].endswith("(rank 2)")
    assert erm["photo"].endswith("(rank 1)") and mldg["photo"].endswith("(rank 1)")  # equal: tied
    assert erm["Avg. rank"] == 1.5 and mldg["Avg. rank"] == 1.0
    erm_rows = board.table.set_index(["method", "protocol"]).loc["erm"]
    mean = np.mean([erm_rows.loc[f"pacs-dg-{t}", "mean"] for t in TARGETS])
    ci = math.sqrt(sum(erm_rows.loc[f"pacs-dg-{t}", "ci95"] ** 2 for t in TARGETS)) / 4
    assert erm["Average"] == f"{100 * mean:.2f} ± {100 * ci:.2f}"
    assert oracle.set_index("Method").loc["mldg", "photo"] == "90.00"
    assert oracle.set_index("Method").loc["erm", "Average"] == "60.00"


def test_the_page_shows_the_domain_generalisation_table(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _populate(tmp_path)
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path))
    app = Path(__file__).resolve().parents[1] / "leaderboards" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=90).run()
    assert not at.exception, at.exception
    headings = [h.value for h in at.subheader]
    assert any(h.startswith("pacs-dg: accuracy on the held-out domain") for h in headings), headings
    captions = re.sub(r"\\(.)", r"\1", " ".join(c.value for c in at.caption))  # captions are markdown-escaped
    assert "training-domain validation" in captions and "McNemar" in captions and "Oracle" in captions
    frames = [f.value for f in at.dataframe]
    dg = [f for f in frames if "Average" in f.columns and "Avg. rank" in f.columns]
    assert dg and dg[0]["Method"].tolist() == ["mldg", "erm"]


def test_the_cli_refuses_an_episodic_method_on_pacs_before_any_data(tmp_path, capsys):
    from episodekit import refused_before_data

    err = refused_before_data(["--method", "protonet", "--protocol", "pacs-dg-sketch"], tmp_path, capsys)
    assert "episodic learner" in err and "erm or mldg" in err
