"""The harness and the `bench` CLI: every method end to end on one protocol per setting on the real
prepared data with tiny budgets, a trained ProtoNet that must actually learn, and the refusals."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from episodekit import TinyBackbone

import baselines  # noqa: F401  (registers the built-in methods)
from baselines.protonet import ProtoNet
from benchmark import records as results
from benchmark import settings as harness
from benchmark.algorithms import ALGORITHMS
from benchmark.backbones import BACKBONES
from benchmark.cli import listing, main
from benchmark.core import paths
from benchmark.core.errors import BenchError
from benchmark.core.files import sha256_file
from benchmark.data import DataError
from benchmark.protocols import PROTOCOLS, EpisodeSpec, Protocol, SplitSpec, Stage
from benchmark.run import RunConfig, TrainingDiverged

# The continual learners and setting have their own real-data runs (tests/test_continual.py: the stream, the
# task sequence and the meta-training sequence through the harness; test_continual_methods.py and
# test_oml_anml.py: every continual learner); a smoke run of every few-shot method on the five-stage
# meta-training sequence would cost minutes and check nothing those do not.
# The noisy-label setting and its reweighting learners (l2rw, mw-net) run end to end in tests/test_noisy_labels.py.
SMOKED_ELSEWHERE = {"continual", "noisy-labels"}
# maml-ssl and protonet-ssl cannot run without a checkpoint `bench pretrain` writes (--hparam init=PATH); they run
# end to end through the harness and `bench verify` in tests/test_ssl_init.py
NEEDS_INIT = {"maml-ssl", "protonet-ssl"}
ELSEWHERE_DATA = ("continual", "noisy-labels")  # the training data of the learners smoked elsewhere
METHODS = [m for m in ALGORITHMS if ALGORITHMS.get(m).training_data not in ELSEWHERE_DATA and m not in NEEDS_INIT]
ALL_PROTOCOLS = list(PROTOCOLS)
# One protocol per setting, on the real data in ../shared/data (grey 28px and RGB 84px between them);
# each method is smoke-tested on these, not on every protocol.
# A setting whose protocols come in two shapes lists one of each: a method is smoke-tested on the first of
# its setting's protocols it can run (domain generalisation: the classifiers and mldg on PACS, the episodic
# learners on rotated Omniglot; mldg's episodic variant has its own real-data run in test_rotated_omniglot_dg).
SMOKE_PROTOCOLS = {
    "few-shot": ["omniglot-5w1s"],
    "cross-domain": ["caltech101-to-pacs-photo-5w1s"],
    "domain-generalisation": ["pacs-dg-photo", "rotated-omniglot-dg-5w1s"],
}


def runs(method: str, protocol: str) -> bool:
    """Whether `bench evaluate` accepts the pair (the method supports the protocol and its setting the method)."""
    try:
        harness.plan(RunConfig(method, (protocol,)))
    except BenchError:
        return False
    return True


SMOKE_PAIRS = [
    (method, next(p for p in protocols if runs(method, p)))
    for method in METHODS
    for protocols in SMOKE_PROTOCOLS.values()
    if any(runs(method, p) for p in protocols)
]

# Small settings for smoke runs; each method gets the ones it has.
SMALL = {
    "meta_batch": 2,
    "eval_batch": 4,
    "ft_steps": 3,
    "batch_size": 16,
    "inner_steps": 1,
    "eval_inner_steps": 1,
    "backbone": "tiny",
    "filters": 4,
}


def small_hparams(method: str) -> dict:
    known = ALGORITHMS.get(method).defaults()
    hp = {k: v for k, v in SMALL.items() if k in known}
    if known.get("embedding") == "paper":  # a paper's own embedding module (relation) takes no backbone
        hp["backbone"] = "conv4"
    return hp


@pytest.fixture(scope="module", autouse=False)
def tiny_backbone():
    """Registers the `tiny` backbone for this module's tests and removes it afterwards."""
    BACKBONES.register("tiny", TinyBackbone)
    yield "tiny"
    BACKBONES.unregister("tiny")


def quiet(_msg: str) -> None:
    pass


def json_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).rglob("*.json")) if Path(folder).exists() else []


def check_record(record: dict, path: Path, method: str, protocol: str, n: int, steps: int, seeds=(0,)):
    assert path is not None and path.is_file()
    assert results.read_record(path) == record  # what was written validates and is what was returned
    p = PROTOCOLS.get(protocol)
    assert record["method"]["name"] == method and record["protocol"]["name"] == protocol
    assert record["protocol"]["version"] == p.version and record["protocol"]["test_episodes"] == n
    assert record["seeds"] == list(seeds) and record["summary"]["n_seeds"] == len(seeds)
    assert record["summary"]["n_episodes"] == n
    assert set(record["data"]) == set(p.datasets)
    per_query = 1 / (p.episode_spec.ways * p.episode_spec.queries)
    for run in record["runs"]:
        accs = np.asarray(run["episode_accuracies"])
        assert run["n"] == n == len(accs) and run["train_steps"] == steps
        assert ((accs >= 0) & (accs <= 1)).all()
        assert np.allclose(np.round(accs / per_query) * per_query, accs, atol=1e-6)  # whole queries right
        assert run["mean"] == pytest.approx(accs.mean())
        ck = run["checkpoint"]
        assert ck and Path(ck["path"]).is_file() and ck["sha256"] == sha256_file(Path(ck["path"]))


def check_classifier_record(record: dict, path: Path, method: str, protocol: str, steps: int):
    assert path is not None and path.is_file() and results.read_record(path) == record
    n = record["protocol"]["test_images"]
    assert record["method"]["name"] == method and record["summary"]["n_images"] == n
    for run in record["runs"]:
        assert len(run["correct"]) == n and run["train_steps"] == steps
        assert run["mean"] == pytest.approx(run["correct"].count("1") / n)
        ck = run["checkpoint"]
        assert ck and Path(ck["path"]).is_file() and ck["sha256"] == sha256_file(Path(ck["path"]))


# ---- every method on one protocol per setting ------------------------------------------------------


def test_smoke_protocols_cover_every_setting_and_method():
    settings = {p.setting for _, p in PROTOCOLS.items()}
    assert settings == set(SMOKE_PROTOCOLS) | SMOKED_ELSEWHERE and not SMOKED_ELSEWHERE & set(SMOKE_PROTOCOLS)
    continual = {m for m in ALGORITHMS if ALGORITHMS.get(m).training_data == "continual"}
    assert continual == {"seq-finetune", "joint", "er", "oml", "anml", "mer", "la-maml"}  # each in its own tests
    assert all(PROTOCOLS.get(name).setting == s for s, names in SMOKE_PROTOCOLS.items() for name in names)
    # every method runs somewhere in every setting whose protocols suit it, and every smoke protocol is used
    assert {m for m, _ in SMOKE_PAIRS} == set(METHODS)
    assert {p for _, p in SMOKE_PAIRS} == {p for names in SMOKE_PROTOCOLS.values() for p in names}
    episodic = [m for m in METHODS if ALGORITHMS.get(m).training_data != "domains"]
    assert all(sum(m == x for x, _ in SMOKE_PAIRS) == len(SMOKE_PROTOCOLS) for m in episodic)


@pytest.mark.integration
@pytest.mark.parametrize("method,protocol", SMOKE_PAIRS)
def test_smoke_every_method_on_each_setting(method, protocol, data_dir, tiny_backbone, tmp_path):
    classifier = PROTOCOLS.get(protocol).episode is None
    record, path = harness.run(
        method,
        protocol,
        episodes=None if classifier else 4,
        train_steps=2,
        val_episodes=4,  # model selection runs, on a few episodes (test_selection.py checks it in full)
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "results"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        progress=False,
        hparams=small_hparams(method),
        log=quiet,
    )
    if classifier:
        check_classifier_record(record, path, method, protocol, steps=2)
    else:
        check_record(record, path, method, protocol, n=4, steps=2)
    assert path.parent == tmp_path / "results" / PROTOCOLS.get(protocol).setting / protocol / method
    assert record["method"]["hparams"]["backbone"] == small_hparams(method)["backbone"]


@pytest.mark.integration
def test_several_seeds(data_dir, tiny_backbone, tmp_path):
    record, path = harness.run(
        "protonet",
        "omniglot-5w1s",
        seeds=(0, 1),
        episodes=4,
        train_steps=2,
        val_episodes=4,
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "r"),
        checkpoint_dir=str(tmp_path / "c"),
        progress=False,
        hparams=small_hparams("protonet"),
        log=quiet,
    )
    check_record(record, path, "protonet", "omniglot-5w1s", n=4, steps=2, seeds=(0, 1))
    assert [r["seed"] for r in record["runs"]] == [0, 1]
    seed_means = [r["mean"] for r in record["runs"]]
    assert record["summary"]["mean"] == pytest.approx(float(np.mean(seed_means)), abs=1e-12)
    assert record["summary"]["seed_ci95"] is not None and record["summary"]["seed_ci95"] >= 0
    per_episode = np.mean([r["episode_accuracies"] for r in record["runs"]], axis=0)
    from benchmark.records import mean_ci

    assert record["summary"]["ci95"] == pytest.approx(mean_ci(per_episode).ci95)
    assert record["runs"][0]["checkpoint"]["sha256"] != record["runs"][1]["checkpoint"]["sha256"]


@pytest.mark.integration
def test_every_method_sees_the_same_test_episodes(data_dir, tiny_backbone, tmp_path):
    fps = {}
    for method in [m for m in METHODS if runs(m, "caltech101-to-pacs-photo-5w1s")]:  # the episodic learners
        record, path = harness.run(
            method,
            "caltech101-to-pacs-photo-5w1s",
            episodes=4,
            train_steps=0,
            device="cpu",
            data_dir=str(data_dir),
            write=False,
            progress=False,
            hparams=small_hparams(method),
            log=quiet,
        )
        assert path is None
        fps[method] = record["protocol"]["episodes_fingerprint"]
    assert len(set(fps.values())) == 1, fps
    prep = harness.prepare_run(PROTOCOLS.get("caltech101-to-pacs-photo-5w1s"), torch.device("cpu"), 4, str(data_dir))
    assert prep.episodes.fingerprint == next(iter(fps.values()))


@pytest.mark.integration
def test_max_train_time_stops_training_early(data_dir, tiny_backbone, tmp_path):
    record, path = harness.run(
        "protonet",
        "omniglot-5w1s",
        episodes=4,
        train_steps=1_000_000,
        max_train_time=1.0,
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "r"),
        checkpoint_dir=str(tmp_path / "c"),
        progress=False,
        hparams=small_hparams("protonet"),
        log=quiet,
    )
    run = record["runs"][0]
    assert 0 < run["train_steps"] < 1_000_000  # the record keeps the steps actually taken
    assert run["train_budget"] == {"steps": 1_000_000, "max_time_s": 1.0}
    assert run["train_time_s"] < 30
    check_record(record, path, "protonet", "omniglot-5w1s", n=4, steps=run["train_steps"])


# ---- a model that must learn ---------------------------------------------------------------------


@pytest.mark.integration
def test_trained_protonet_learns_omniglot(data_dir, tmp_path):
    """Calibrated on CPU: 300 steps give about 0.85 on 100 test episodes (untrained about 0.56; chance 0.20).
    5-way training episodes (not the paper's 60-way recipe) and one validation check keep it cheap."""
    trained, path = harness.run(
        "protonet",
        "omniglot-5w1s",
        episodes=100,
        train_steps=300,
        hparams={"train_ways": 5, "train_queries": 15},
        val_episodes=20,
        val_checks=1,
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "r"),
        checkpoint_dir=str(tmp_path / "c"),
        progress=False,
        log=quiet,
    )
    check_record(trained, path, "protonet", "omniglot-5w1s", n=100, steps=300)
    untrained, _ = harness.run(
        "protonet",
        "omniglot-5w1s",
        episodes=100,
        train_steps=0,
        device="cpu",
        data_dir=str(data_dir),
        write=False,
        progress=False,
        log=quiet,
    )
    t, u = trained["summary"]["mean"], untrained["summary"]["mean"]
    assert t > 0.80, f"trained ProtoNet scored {t:.3f}"
    assert u < t - 0.15, f"untrained {u:.3f} vs trained {t:.3f}"
    assert trained["summary"]["ci95"] < 0.05
    assert trained["protocol"]["episodes_fingerprint"] == untrained["protocol"]["episodes_fingerprint"]


# ---- refusals ------------------------------------------------------------------------------------


class NaNProto(ProtoNet):
    name = "nanproto"

    def training_step(self, ep, batch_idx):
        return super().training_step(ep, batch_idx) * float("nan")


class WrongShape(ProtoNet):
    name = "wrongshape"

    def predict(self, support_x, support_y, query_x, ways):
        return super().predict(support_x, support_y, query_x, ways)[..., :-1]


class Picky(ProtoNet):
    name = "picky"

    @classmethod
    def supports(cls, protocol):
        return "it only runs on colour images" if protocol.channels == 1 else None


@pytest.mark.integration
def test_nan_loss_stops_training_and_writes_nothing(data_dir, tiny_backbone, tmp_path):
    with pytest.raises(TrainingDiverged, match="nan"):
        harness.run(
            "nanproto",
            "omniglot-5w1s",
            episodes=4,
            train_steps=3,
            device="cpu",
            data_dir=str(data_dir),
            results_dir=str(tmp_path / "r"),
            checkpoint_dir=str(tmp_path / "c"),
            progress=False,
            hparams={"backbone": "tiny"},
            method_cls=NaNProto,
            log=quiet,
        )
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*"))
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*"))


@pytest.mark.integration
def test_wrong_predict_shape_names_the_contract(data_dir, tiny_backbone, tmp_path):
    with pytest.raises(BenchError, match=r"contract is \[episodes, queries, ways\]"):
        harness.run(
            "wrongshape",
            "omniglot-5w1s",
            episodes=4,
            train_steps=0,
            device="cpu",
            data_dir=str(data_dir),
            results_dir=str(tmp_path / "r"),
            progress=False,
            hparams={"backbone": "tiny"},
            method_cls=WrongShape,
            log=quiet,
        )
    assert not json_files(tmp_path / "r")


def test_unsupported_protocol_is_refused_before_any_work(tmp_path):
    with pytest.raises(BenchError, match="cannot run protocol omniglot-5w1s: it only runs on colour"):
        harness.run(
            "picky",
            "omniglot-5w1s",
            episodes=4,
            train_steps=0,
            device="cpu",
            data_dir=str(tmp_path / "no-data"),
            results_dir=str(tmp_path / "r"),
            method_cls=Picky,
            log=quiet,
        )
    assert not (tmp_path / "r").exists()


@pytest.mark.integration
def test_unfillable_episode_spec_is_a_data_error(data_dir, monkeypatch, tmp_path):
    adhoc = Protocol(
        name="test-pacs-20w1s",
        version=1,
        setting="cross-domain",
        description="20-way episodes on PACS, which has 7 classes",
        stages=(
            Stage(
                train=SplitSpec("pacs", where=(("domain", ("photo", "cartoon")),)),
                test=(SplitSpec("pacs", where=(("domain", ("sketch",)),)),),
            ),
        ),
        episode=EpisodeSpec(20, 1, 15),
        image_size=84,
        channels=3,
    )
    with pytest.raises(DataError) as ei:
        harness.prepare_run(adhoc, torch.device("cpu"), 4, str(data_dir))
    assert "20" in str(ei.value) and "7" in str(ei.value)
    monkeypatch.setitem(PROTOCOLS._items, adhoc.name, adhoc)  # registered for this test only
    with pytest.raises(DataError, match="20-way episodes need 20 classes"):
        harness.run(
            "protonet",
            adhoc.name,
            episodes=4,
            train_steps=1,
            device="cpu",
            data_dir=str(data_dir),
            results_dir=str(tmp_path / "r"),
            progress=False,
            log=quiet,
        )
    assert not json_files(tmp_path / "r")


# ---- the command line ----------------------------------------------------------------------------


@pytest.fixture
def fake_prepared(tmp_path):
    """A data dir in which omniglot looks prepared (a manifest only): enough for checks made before data is read."""
    root = tmp_path / "fake-data"
    (root / "omniglot").mkdir(parents=True)
    (root / "omniglot" / "metabench.json").write_text(
        json.dumps({"name": "omniglot", "fingerprint": "0" * 64, "rows": 0, "classes": 0})
    )
    return root


def test_cli_unknown_method(fake_prepared, tmp_path, capsys):
    rc = main(
        [
            "evaluate",
            "--method",
            "protonett",
            "--data-dir",
            str(fake_prepared),
            "--results",
            str(tmp_path / "r"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Did you mean 'protonet'" in err and "unknown method" in err
    assert not (tmp_path / "r").exists()


def test_cli_unknown_protocol(tmp_path, capsys):
    rc = main(
        ["evaluate", "--protocol", "omniglot-5w1z", "--data-dir", str(tmp_path), "--results", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Did you mean 'omniglot-5w1s'" in err and "unknown protocol" in err


def test_cli_unknown_hparam(fake_prepared, tmp_path, capsys):
    rc = main(
        [
            "evaluate",
            "--hparam",
            "learning_rate=0.1",
            "--data-dir",
            str(fake_prepared),
            "--results",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "learning_rate" in err and "lr_step" in err


def test_one_hparam_flag_takes_several_and_submit_keeps_its_file():
    from benchmark.cli.main import build_parser

    parser = build_parser()
    ev = parser.parse_args(["evaluate", "--hparam", "lr=0.1", "ways=5", "--hparam", "shots=2", "--quiet"])
    assert ev.hparam == ["lr=0.1", "ways=5", "shots=2"]
    # a list after submit's --hparam would swallow the submission file: there it is one value per flag
    sm = parser.parse_args(["submit", "--hparam", "lr=0.1", "mine.py"])
    assert sm.hparam == ["lr=0.1"] and sm.spec == "mine.py"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--episodes", "0"], "--episodes must be between 1 and 100,000"),
        (["--seeds", "3", "3"], "lists a seed twice"),
        (["--train-steps", "-5"], "--train-steps must be 0 or more"),
        (["--method", "maml", "--hparam", "train_ways=10"], "drop train_ways=10"),
    ],
)
def test_cli_rejects_bad_run_settings(fake_prepared, tmp_path, capsys, args, needle):
    rc = main(["evaluate", *args, "--data-dir", str(fake_prepared), "--results", str(tmp_path / "r"), "--quiet"])
    assert rc == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_cli_cuda_without_a_gpu(fake_prepared, tmp_path, capsys):
    rc = main(["evaluate", "--device", "cuda", "--data-dir", str(fake_prepared), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "--device cuda" in err and "no CUDA device" in err and "--device cpu" in err
    assert not (tmp_path / "r").exists()


def test_cli_list(tmp_path, capsys):
    assert main(["list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("protonet", "maml", "finetune", *ALL_PROTOCOLS, "omniglot", "pacs", "caltech101"):
        assert name in out, name
    assert "not prepared (bench data prepare omniglot)" in out
    assert main(["list", "--method", "maml"]) == 0
    out = capsys.readouterr().out
    assert "inner_lr = 0.4" in out and "first_order = False" in out


def test_cli_list_reads_methods_without_importing_them(tmp_path):
    # the overview answers in about a second because it never imports torch; the names and citations it
    # reads from baselines/ must be the registry's
    assert sorted(listing.builtin_methods() or []) == sorted((n, c.paper) for n, c in ALGORITHMS.items())
    code = (
        "import sys; from benchmark.cli.main import main; rc = main(['list', '--data-dir', sys.argv[1]]); "
        "assert rc == 0 and 'torch' not in sys.modules and 'scipy.stats' not in sys.modules, sorted(sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "maml " in out.stdout and "omniglot-5w1s " in out.stdout


def test_cli_evaluate_help(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["evaluate", "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--seeds",
        "--episodes",
        "--train-steps",
        "--device",
        "--method",
        "--protocol",
        "--hparam",
        "--max-train-time",
    ):
        assert flag in out, flag


def test_cli_evaluate_without_prepared_data(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(empty))
    for var in (paths.SOURCE_ENV, paths.source_env_var("omniglot")):
        monkeypatch.delenv(var, raising=False)
    rc = main(["evaluate", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "bench data prepare omniglot" in err
    assert list(empty.iterdir()) == [] and not (tmp_path / "r").exists()


def test_cli_evaluate_prepares_from_the_configured_source(tmp_path, monkeypatch, capsys, omniglot_zips, tiny_backbone):
    """With BENCH_SOURCE set, `bench evaluate` prepares what is missing, then runs and writes a record."""
    src = omniglot_zips(
        tmp_path / "src" / "omniglot",
        drawers=16,
        alphabets={"background": {"Alpha": 3, "Beta": 3}, "evaluation": {"Gamma": 5}},
    )
    monkeypatch.setenv(paths.SOURCE_ENV, str(src["root"].parent))
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "data"))
    rc = main(
        [
            "evaluate",
            "--protocol",
            "omniglot-lake-5w1s",
            "--episodes",
            "3",
            "--train-steps",
            "2",
            "--device",
            "cpu",
            "--quiet",
            "--results",
            str(tmp_path / "r"),
            "--hparam",
            "backbone=tiny",
            "--hparam",
            "eval_batch=2",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "preparing it from the configured source" in captured.out
    (path,) = json_files(tmp_path / "r")
    record = results.read_record(path)
    assert record["protocol"]["name"] == "omniglot-lake-5w1s" and record["runs"][0]["n"] == 3
    assert record["method"]["hparams"]["eval_batch"] == 2  # the string from the command line became an int
    assert (tmp_path / "data" / "omniglot" / "metabench.json").is_file()


@pytest.mark.integration
def test_cli_evaluate_end_to_end(data_dir, tiny_backbone, tmp_path, capsys):
    rc = main(
        [
            "evaluate",
            "--method",
            "maml",
            "--protocol",
            "caltech101-5w1s",
            "--seeds",
            "0",
            "1",
            "--episodes",
            "4",
            "--train-steps",
            "1",
            "--device",
            "cpu",
            "--data-dir",
            str(data_dir),
            "--results",
            str(tmp_path / "r"),
            "--quiet",
            "--hparam",
            "backbone=tiny",
            "--hparam",
            "meta_batch=2",
            "--hparam",
            "first_order=true",
            *("--val-episodes", "5"),  # the selection runs, at 5 episodes rather than 100 (84 px MAML is slow)
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    (path,) = json_files(tmp_path / "r")
    record = results.read_record(path)
    assert record["method"]["hparams"]["first_order"] is True and record["seeds"] == [0, 1]
    assert "95% CI over 4 test episodes" in captured.out and f"wrote {path}" in captured.out
    assert math.isfinite(record["summary"]["mean"])
