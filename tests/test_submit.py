"""`bench submit` and `bench verify`: the submission contract checks, a real submission of
examples/simpleshot.py on Omniglot end to end, and verification catching forged records, altered
checkpoints and changed submission files."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmark import records as results
from benchmark import settings as harness
from benchmark.algorithms import ALGORITHMS
from benchmark.cli import main
from benchmark.core.files import sha256_file
from benchmark.core.registry import UnknownName
from benchmark.episodes import fixed_episodes
from benchmark.protocols import PROTOCOLS, EpisodeSpec
from benchmark.settings.episodic_training import sample_episodes
from benchmark.submissions import loading, submit
from benchmark.submissions import verify as verifying

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "simpleshot.py"
PROTOCOL = "omniglot-5w1s"
EPISODES = 10
# tiny budgets: CPU, a handful of steps, small batches (the numbers are not the point, reproducing them is)
TINY = ["--episodes", str(EPISODES), "--device", "cpu", "--quiet"]

GOOD = """
import torch
from benchmark.algorithms import MetaLearner

class Mine(MetaLearner):
    name = "mine"
    paper = "Me et al., A Method, 2025"
    HPARAMS = {"lr": 0.1}

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def predict(self, support_x, support_y, query_x, ways):
        return torch.zeros(query_x.shape[0], query_x.shape[1], ways) + self.w

    def training_step(self, batch, batch_idx):
        return self.w.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hp["lr"])
"""


def write(tmp_path: Path, text: str, name: str = "mine.py") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


# ---- the contract --------------------------------------------------------------------------------


def test_good_submission_loads_with_its_source(tmp_path):
    p = write(tmp_path, GOOD)
    cls, src = loading.load_submission(str(p))
    assert cls.name == "mine" and cls.__name__ == "Mine"
    assert src == {"file": str(p), "class": "Mine", "sha256": sha256_file(p)}
    assert "mine" not in ALGORITHMS  # loaded, never registered
    cls2, _ = loading.load_submission(f"{p}:Mine")
    assert cls2 is not cls  # each load is a fresh module: no clash between two submissions


def test_no_metalearner_subclass(tmp_path):
    p = write(tmp_path, "class Helper:\n    pass\n")
    with pytest.raises(loading.SubmissionError, match="defines no MetaLearner subclass.*Helper"):
        loading.load_submission(str(p))


def test_missing_predict_is_named_with_every_other_problem(tmp_path):
    src = GOOD.replace(
        "    def predict(self, support_x, support_y, query_x, ways):\n"
        "        return torch.zeros(query_x.shape[0], query_x.shape[1], ways) + self.w\n",
        "",
    )
    src = src.replace('    paper = "Me et al., A Method, 2025"\n', "")
    p = write(tmp_path, src)
    with pytest.raises(loading.SubmissionError) as ei:
        loading.load_submission(str(p))
    msg = str(ei.value)
    assert "`predict` is not implemented" in msg and "`paper` is missing" in msg  # one error, all problems
    assert "training_step" not in msg


def test_plain_lightning_module_is_refused(tmp_path):
    p = write(
        tmp_path,
        """
        import pytorch_lightning as pl
        class Lit(pl.LightningModule):
            name = "lit"
    """,
    )
    with pytest.raises(loading.SubmissionError, match="Lit is a plain pytorch_lightning.LightningModule.*MetaLearner"):
        loading.load_submission(str(p))
    with pytest.raises(loading.SubmissionError, match="plain pytorch_lightning.LightningModule"):
        loading.load_submission(f"{p}:Lit")


def test_wrong_logits_shape_fails_the_dry_check(tmp_path):
    p = write(tmp_path, GOOD.replace("query_x.shape[1], ways) + self.w", "ways) + self.w"))
    with pytest.raises(loading.SubmissionError, match=r"dry check.*shape \[2, 5\].*\[2, 10, 5\]"):
        loading.load_submission(str(p))


def test_builtin_name_clash_suggests_another(tmp_path):
    p = write(tmp_path, GOOD.replace('name = "mine"', 'name = "protonet"'))
    with pytest.raises(loading.SubmissionError, match="'protonet' is a built-in method.*choose another"):
        loading.load_submission(str(p))


def test_signature_training_data_and_several_classes(tmp_path):
    p = write(
        tmp_path,
        GOOD.replace("def predict(self, support_x, support_y, query_x, ways)", "def predict(self, xs, ys, xq)").replace(
            'HPARAMS = {"lr": 0.1}', 'HPARAMS = {"lr": 0.1}\n    training_data = "pixels"'
        ),
    )
    with pytest.raises(loading.SubmissionError) as ei:
        loading.load_submission(str(p))
    assert "`predict` must take (support_x, support_y, query_x, ways), not (xs, ys, xq)" in str(ei.value)
    assert "'episodes' or 'batches'" in str(ei.value)
    two = write(tmp_path, GOOD + "\n\nclass Other(Mine):\n    name = 'other'\n", "two.py")
    with pytest.raises(loading.SubmissionError, match=r"several MetaLearner subclasses \(Mine, Other\)"):
        loading.load_submission(str(two))
    assert loading.load_submission(f"{two}:Other")[0].name == "other"
    with pytest.raises(loading.SubmissionError, match="no class 'Othr'. Did you mean 'Other'"):
        loading.load_submission(f"{two}:Othr")


def test_subclassing_a_builtin_and_import_errors(tmp_path):
    p = write(
        tmp_path,
        """
        from baselines.protonet import ProtoNet
        class MyProto(ProtoNet):
            name = "myproto"
    """,
    )
    cls, _ = loading.load_submission(str(p))
    assert cls.name == "myproto" and "protonet" in ALGORITHMS and "myproto" not in ALGORITHMS
    bad = write(tmp_path, "import torch\nx = 1 / 0\n", "bad.py")
    with pytest.raises(loading.SubmissionError, match=r"importing it failed \(line 2\): ZeroDivisionError"):
        loading.load_submission(str(bad))


def test_cli_submit_contract_error_exits_2(tmp_path, capsys):
    p = write(tmp_path, "class Helper:\n    pass\n")
    assert main(["submit", str(p), "--results", str(tmp_path / "r"), "--data-dir", str(tmp_path)]) == 2
    assert "defines no MetaLearner subclass" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_protocol_groups():
    few = submit.resolve_protocols(["few-shot"])
    assert PROTOCOL in few and all(PROTOCOLS.get(n).setting == "few-shot" for n in few)
    cross = submit.resolve_protocols(["cross-domain"])
    assert cross and all(PROTOCOLS.get(n).setting == "cross-domain" for n in cross)
    assert submit.resolve_protocols(["all"]) == list(PROTOCOLS)
    assert submit.resolve_protocols([PROTOCOL, "few-shot"])[0] == PROTOCOL  # no duplicates, order kept
    with pytest.raises(UnknownName, match="Did you mean 'omniglot-5w1s'"):
        submit.resolve_protocols(["omniglot-5w1z"])


def test_sampled_episodes_are_those_of_the_full_index(make_view):
    """verify re-runs episode i generated alone; it must be the batched index's episode i."""
    view = make_view([20] * 12)
    spec = EpisodeSpec(5, 1, 3)
    full = fixed_episodes(view, spec, "p:v1:test", 30)
    prep = SimpleNamespace(protocol=SimpleNamespace(episode_spec=spec, name="p", version=1), test=view, episodes=full)
    idx = [0, 7, 29]
    sub = sample_episodes(prep, idx)  # keyed "p:v1:test", as the index above
    assert torch.equal(sub.classes, full.classes[idx]) and torch.equal(sub.qperm, full.qperm[idx])
    assert torch.equal(sub.slots, full.slots[idx])


# ---- submit and verify end to end ----------------------------------------------------------------


@pytest.fixture(scope="module")
def submitted(data_dir, tmp_path_factory):
    """examples/simpleshot.py submitted on omniglot-5w1s with a tiny budget: (results dir, record path)."""
    res = tmp_path_factory.mktemp("submit") / "results"
    rc = main(
        [
            "submit",
            str(EXAMPLE),
            "--protocols",
            PROTOCOL,
            "--train-steps",
            "20",
            "--hparam",
            "batch_size=16",
            *("--val-episodes", "5", "--val-checks", "1"),  # submit takes evaluate's selection options
            "--results",
            str(res),
            "--data-dir",
            str(data_dir),
            *TINY,
        ]
    )
    assert rc == 0
    (path,) = sorted(res.rglob("*.json"))
    return res, path


def verify_cli(path, data_dir, *extra) -> int:
    return main(["verify", str(path), "--device", "cpu", "--data-dir", str(data_dir), *extra])


@pytest.mark.integration
def test_submit_writes_a_submission_record(submitted):
    res, path = submitted
    record = results.read_record(path)
    assert path.parent == res / "few-shot" / PROTOCOL / "my-simpleshot"
    assert record["kind"] == "submission" and record["method"]["name"] == "my-simpleshot"
    assert record["method"]["source"]["sha256"] == sha256_file(EXAMPLE)
    assert record["method"]["source"]["class"] == "SimpleShot"
    assert record["runs"][0]["n"] == EPISODES and record["runs"][0]["train_steps"] == 20
    selection = record["runs"][0]["selection"]
    assert selection["rule"] == "best-val" and selection["episodes"] == 5 and selection["checked_steps"] == [20]
    ck = record["runs"][0]["checkpoint"]
    assert not Path(ck["path"]).is_absolute() and (res / ck["path"]).is_file()
    assert "my-simpleshot" not in ALGORITHMS


@pytest.mark.integration
def test_verify_passes(submitted, data_dir, capsys):
    _, path = submitted
    assert verify_cli(path, data_dir) == 0
    out = capsys.readouterr().out
    assert "verdict: PASS" in out and f"{EPISODES} episode(s) over 1 seed(s) reproduce the record" in out


def forge(path: Path, episode: int, to: Path) -> None:
    """A careful forger: change one episode's accuracy and fix the means and intervals so the record still
    passes every check a reader makes."""
    record = json.loads(path.read_text())
    run = record["runs"][0]
    accs = run["episode_accuracies"]
    accs[episode] = 1.0 if accs[episode] < 0.5 else 0.0
    run["mean"] = sum(accs) / len(accs)
    run["ci95"] = record["summary"]["ci95"] = results.mean_ci(accs).ci95
    record["summary"]["mean"] = run["mean"]
    results.validate(record)
    harness.check_record(record)
    to.write_text(json.dumps(record))


@pytest.mark.integration
def test_verify_catches_a_forged_episode(submitted, data_dir, capsys):
    _, path = submitted
    forged = path.with_name("forged.json")
    forge(path, 3, forged)
    try:
        assert verify_cli(forged, data_dir) == 1
        out = capsys.readouterr().out
        assert "verdict: FAIL" in out and "episode(s) 3 do not reproduce" in out
    finally:
        forged.unlink()


@pytest.mark.integration
def test_verify_catches_an_altered_checkpoint(submitted, data_dir, tmp_path, capsys):
    res, path = submitted
    copy = tmp_path / "results"
    shutil.copytree(res, copy)
    record = results.read_record(path)
    ckpt = copy / record["runs"][0]["checkpoint"]["path"]
    blob = torch.load(ckpt, weights_only=True)
    blob["state_dict"]["train_mean"] += 0.01
    torch.save(blob, ckpt)
    assert verify_cli(copy / path.relative_to(res), data_dir) == 1
    out = capsys.readouterr().out
    assert "sha256" in out and "the weights are not the ones that were scored" in out and "verdict: FAIL" in out
    ckpt.unlink()
    assert verify_cli(copy / path.relative_to(res), data_dir) == 2
    assert "is missing" in capsys.readouterr().err


@pytest.mark.integration
def test_verify_catches_a_changed_submission_file_and_foreign_episodes(submitted, data_dir, tmp_path, capsys):
    _, path = submitted
    changed = tmp_path / "simpleshot.py"
    changed.write_text(EXAMPLE.read_text().replace('"lr": 1e-3', '"lr": 2e-3'))
    assert verify_cli(path, data_dir, "--source", str(changed)) == 1
    assert "changed since the record was made" in capsys.readouterr().out
    record = json.loads(path.read_text())
    record["protocol"]["episodes_fingerprint"] = "0" * 64
    other = path.with_name("other-episodes.json")
    other.write_text(json.dumps(record))
    try:
        assert verify_cli(other, data_dir) == 1
        assert "not scored on the protocol's episodes" in capsys.readouterr().out
        record["protocol"]["version"] = 2
        other.write_text(json.dumps(record))
        assert verify_cli(other, data_dir) == 2
        assert "v2 but this code has v1" in capsys.readouterr().err
    finally:
        other.unlink()


@pytest.mark.integration
def test_verify_a_builtin_method_record(data_dir, tmp_path):
    record, path = harness.run(
        "protonet",
        PROTOCOL,
        episodes=EPISODES,
        train_steps=3,
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "r"),
        progress=False,
        hparams={"eval_batch": 4},
        val_episodes=5,  # the selection path, at a fraction of the default 5 x 100 validation episodes
        val_checks=1,
        log=lambda _m: None,
    )
    full = verifying.verify(path, device="cpu", data_dir=str(data_dir))  # the default: every episode
    assert full.passed, full.format()
    assert full.seeds[0].indices == list(range(EPISODES)) and f"all {EPISODES} test episodes" in full.format()
    report = verifying.verify(path, sample=5, seed=0, device="cpu", data_dir=str(data_dir))
    assert report.passed, report.format()
    (check,) = report.seeds
    assert len(check.indices) == 5 == len(set(check.indices)) and check.indices == sorted(check.indices)
    assert np.allclose(check.recorded, check.recomputed, atol=1 / 75 + 1e-9)
    # the same seed picks the same sample; another seed another one
    again = verifying.verify(path, sample=5, seed=0, device="cpu", data_dir=str(data_dir))
    assert again.seeds[0].indices == check.indices
    other = verifying.verify(path, sample=5, seed=1, device="cpu", data_dir=str(data_dir))
    assert other.seeds[0].indices != check.indices
    # without --seed the sample is drawn afresh, and the report says with which seed
    fresh = verifying.verify(path, sample=5, device="cpu", data_dir=str(data_dir))
    assert "drawn with --seed" in fresh.format() and fresh.passed


@pytest.mark.integration
def test_verify_refuses_records_out_of_place_or_without_a_real_checkpoint(data_dir, tmp_path, capsys):
    _, path = harness.run(
        "protonet",
        PROTOCOL,
        episodes=EPISODES,
        train_steps=0,
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "r"),
        progress=False,
        log=lambda _m: None,
    )
    loose = tmp_path / "copy.json"
    loose.write_text(path.read_text())
    assert verify_cli(loose, data_dir) == 2
    assert "is not where a results folder keeps it" in capsys.readouterr().err
    record = json.loads(path.read_text())
    fake = tmp_path / "r" / "checkpoints" / "not-a-checkpoint.pt"
    fake.write_text("weights? no")
    record["runs"][0]["checkpoint"] = {"path": "checkpoints/not-a-checkpoint.pt", "sha256": sha256_file(fake)}
    path.write_text(json.dumps(record))
    assert verify_cli(path, data_dir) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint" in err and "Traceback" not in err
