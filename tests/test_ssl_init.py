"""MAML and ProtoNet from a self-supervised initialisation: the pre-training reads a protocol's training images
and no labels; its checkpoint loads into maml-ssl and protonet-ssl exactly; MAML's meta-gradient from it is
still the per-task loop's and the finite differences'; a wrong init is refused before any data; and on the real
Omniglot, `bench pretrain` -> protonet-ssl and maml-ssl -> record -> `bench verify`, which fails once the init
checkpoint changes."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from episodekit import SmallConv, SmoothMlp, TinyBackbone, random_episodes, refused_before_data

import baselines  # noqa: F401  (registers the built-in methods)
from benchmark import settings as harness
from benchmark.cli import main
from benchmark.core.errors import BenchError
from benchmark.core.files import sha256_file
from benchmark.methods import ALGORITHMS, BACKBONES, TaskInfo
from benchmark.methods.ssl import CHECKPOINT_KIND, InitError, RotationPretraining, recorded_init
from benchmark.protocols import PROTOCOLS
from benchmark.run import RunConfig
from benchmark.run import pretrain as pretraining
from benchmark.run.checkpoints import save_checkpoint, save_ssl_checkpoint
from benchmark.store import load_store, split_rows
from benchmark.submissions.verify import VerifyError, verify

OMNIGLOT = PROTOCOLS.get("omniglot-5w1s")
NETS = {"ssl-tiny": TinyBackbone, "ssl-small": SmallConv, "ssl-smooth": SmoothMlp}


@pytest.fixture(scope="module", autouse=True)
def backbones():
    for name, net in NETS.items():
        BACKBONES.register(name, net)
    yield
    for name in NETS:
        BACKBONES.unregister(name)


def quiet(_msg: str) -> None:
    pass


def ssl_checkpoint(folder: Path, backbone="ssl-tiny", channels=1, size=28, seed=0, **meta) -> tuple[dict, dict]:
    """An SSL checkpoint of a backbone whose weights and running statistics are all drawn at random (so none equals
    a fresh network's), for omniglot-5w1s unless `meta` says otherwise; (saved path and sha256, state dict)."""
    torch.manual_seed(seed)
    net = RotationPretraining(backbone, channels, size).backbone
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)  # positive: a valid running variance too
    info = {"ssl": "rotation", "protocol": "omniglot-5w1s", "protocol_version": OMNIGLOT.version}
    info |= {"train_split": OMNIGLOT.train.label, "backbone": backbone, "channels": channels, "image_size": size}
    saved = save_ssl_checkpoint(net, {**info, "steps": 1, "seed": seed, **meta}, folder, f"test-{backbone}")
    return saved, {k: v.clone() for k, v in net.state_dict().items()}


# ---- loading: exact, into both methods ----------------------------------------------------------------------


def test_the_checkpoint_loads_exactly_into_maml_and_protonet(tmp_path):
    saved, state = ssl_checkpoint(tmp_path)
    assert Path(saved["path"]).name.endswith(f"-{saved['sha256'][:12]}.pt")
    assert sha256_file(saved["path"]) == saved["sha256"]
    task = TaskInfo(ways=5, shots=1, queries=2, image_size=28, channels=1, n_train_classes=20)
    proto = ALGORITHMS.get("protonet-ssl")(task, backbone="ssl-tiny", init=saved["path"])
    maml = ALGORITHMS.get("maml-ssl")(task, backbone="ssl-tiny", init=saved["path"])
    # ProtoNet's embedding is the checkpoint, batch-norm running statistics included
    got = proto.encoder.state_dict()
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    # MAML's network normalises with batch statistics: every weight it has is the checkpoint's, the buffers it
    # has no place for are left out, and its head is its own
    features = maml.net.features.state_dict()
    assert set(features) == {k for k in state if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert all(torch.equal(features[k], state[k]) for k in features)
    assert {"init", "init_sha256"} <= set(maml.hp) and maml.hp["init_sha256"] == saved["sha256"]
    assert proto.hp["init_sha256"] == saved["sha256"]
    fresh = ALGORITHMS.get("protonet")(task, backbone="ssl-tiny").encoder.state_dict()
    assert not torch.equal(fresh["net.1.weight"], got["net.1.weight"])  # loading changed something


# ---- refusals: before any data ------------------------------------------------------------------------------


def _plan(method: str, **hp):
    return harness.plan(RunConfig(method, ("omniglot-5w1s",), hparams={"backbone": "ssl-tiny", **hp}))


def test_a_matching_checkpoint_plans_and_names_its_sha256(tmp_path):
    saved, _ = ssl_checkpoint(tmp_path)
    for method in ("maml-ssl", "protonet-ssl"):
        *_, hp, _recipe, _steps = _plan(method, init=saved["path"])
        assert hp["init"] == saved["path"] and hp["init_sha256"] == saved["sha256"]
    # caltech101-5w5s shares caltech101-5w1s's training split: one checkpoint serves both
    assert PROTOCOLS.get("caltech101-5w1s").train.label == PROTOCOLS.get("caltech101-5w5s").train.label


@pytest.mark.parametrize(
    "case,message",
    [
        ("none", "starts from a self-supervised checkpoint: run `bench pretrain --ssl rotation"),
        ("missing", "no such file"),
        ("garbage", "is not a torch checkpoint"),
        ("run checkpoint", "is not an SSL checkpoint (it is a trained protonet model's checkpoint)"),
        ("other backbone", "it was pre-trained for backbone 'ssl-small' (this run: 'ssl-tiny')"),
        ("other size", "image size 84 (this run: 28)"),
        ("other channels", "channels 3 (this run: 1)"),
        ("other split", "so it may have seen this protocol's test images"),
        ("changed file", "the file changed"),
    ],
)
def test_a_wrong_init_is_refused_before_any_data(case, message, tmp_path):
    init, extra = "", {}
    if case == "missing":
        init = str(tmp_path / "nothing.pt")
    elif case == "garbage":
        init = str(tmp_path / "garbage.pt")
        Path(init).write_bytes(b"not a checkpoint")
    elif case == "run checkpoint":
        run = save_checkpoint(torch.nn.Linear(2, 2), {}, tmp_path / "run.pt", "protonet", "omniglot-5w1s", 1, 0)
        init = run["path"]
    elif case != "none":
        kind = {
            "other backbone": {"backbone": "ssl-small"},
            "other size": {"size": 84},
            "other channels": {"channels": 3},
            "other split": {"train_split": PROTOCOLS.get("omniglot-lake-5w1s").train.label},
        }.get(case, {})
        init = ssl_checkpoint(tmp_path, **kind)[0]["path"]
        if case == "changed file":
            extra = {"init_sha256": "0" * 64}
    for method in ("maml-ssl", "protonet-ssl"):
        with pytest.raises(BenchError) as e:
            _plan(method, **({"init": init} if init else {}), **extra)
        assert message in str(e.value), str(e.value)


def test_bench_evaluate_refuses_a_missing_init_before_touching_data(tmp_path, capsys):
    err = refused_before_data(["--method", "maml-ssl", "--hparam", f"init={tmp_path / 'gone.pt'}"], tmp_path, capsys)
    assert "no such file" in err and "bench pretrain" in err
    err = refused_before_data(["--method", "protonet-ssl"], tmp_path, capsys)
    assert "--hparam init=PATH" in err


def test_bench_pretrain_refuses_bad_options_before_reading_data(tmp_path, capsys):
    def fails(*args: str) -> str:
        rc = main(["pretrain", *args, "--data-dir", str(tmp_path / "no-data"), "--results", str(tmp_path / "r")])
        assert rc == 2 and not (tmp_path / "r").exists() and not (tmp_path / "no-data").exists()
        return capsys.readouterr().err

    assert "choose rotation" in fails("--ssl", "simclr")
    assert "single-stage episodic" in fails("--protocol", "pacs-dg-photo")
    assert "unknown backbone 'conv5'" in fails("--backbone", "conv5")
    assert "--train-seconds 0.0 must be a positive number" in fails("--train-seconds", "0")


def test_verify_reads_an_init_only_where_the_record_names_its_sha256(tmp_path):
    saved, _ = ssl_checkpoint(tmp_path)
    roots = (tmp_path / "results", tmp_path)
    # icl-transformer's `init` is a choice of initialisation, not a file: nothing to re-check
    assert recorded_init({"init": "retrieval"}, roots) == (None, None)
    assert recorded_init({"init": saved["path"], "init_sha256": saved["sha256"]}, roots) == (Path(saved["path"]), None)
    moved = tmp_path / "results" / "checkpoints" / "ssl" / Path(saved["path"]).name  # a results folder moved
    moved.parent.mkdir(parents=True)
    Path(saved["path"]).rename(moved)
    assert recorded_init({"init": saved["path"], "init_sha256": saved["sha256"]}, roots) == (moved, None)
    _, problem = recorded_init({"init": str(moved), "init_sha256": "f" * 64}, roots)
    assert problem and "did not start from this file" in problem
    with pytest.raises(InitError, match="is missing"):
        recorded_init({"init": str(tmp_path / "gone.pt"), "init_sha256": saved["sha256"]}, roots)


# ---- MAML's meta-gradient from the SSL init -----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*self.log.*")
@pytest.mark.parametrize("force_vmap", [True, False])
def test_maml_meta_gradient_from_the_ssl_init_equals_the_per_task_loop(force_vmap, tmp_path):
    saved, state = ssl_checkpoint(tmp_path, size=16)
    task = TaskInfo(ways=3, shots=2, queries=2, image_size=16, channels=1, n_train_classes=10)
    torch.manual_seed(0)
    model = ALGORITHMS.get("maml-ssl")(task, backbone="ssl-tiny", init=saved["path"], inner_steps=2, inner_lr=0.3)
    model = model.double()
    model.force_vmap = force_vmap
    own = model.net.features.state_dict()
    assert all(torch.equal(own[k], state[k].double()) for k in own)  # the gradient is taken at the SSL weights
    ep = random_episodes(3, 3, 2, 2, dtype=torch.float64)
    params = list(model.parameters())
    batched, loop = model.training_step(ep, 0), model.loop_meta_loss(ep)
    assert batched.item() == pytest.approx(loop.item(), rel=1e-9, abs=1e-12)
    g_batched, g_loop = torch.autograd.grad(batched, params), torch.autograd.grad(loop, params)
    for (name, _), a, b in zip(model.named_parameters(), g_batched, g_loop):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9), name
    assert all(a.abs().sum() > 0 for n, a in zip(dict(model.named_parameters()), g_batched) if "weight" in n)


def test_maml_meta_gradient_from_the_ssl_init_matches_finite_differences(tmp_path):
    # a smooth backbone (no batch norm, no ReLU): central differences are exact to O(eps^2)
    saved, state = ssl_checkpoint(tmp_path, backbone="ssl-smooth", size=4)
    task = TaskInfo(ways=3, shots=2, queries=2, image_size=4, channels=1, n_train_classes=10)
    torch.manual_seed(0)
    model = ALGORITHMS.get("maml-ssl")(task, backbone="ssl-smooth", init=saved["path"], inner_steps=2, inner_lr=0.5)
    model = model.double()
    assert torch.equal(model.net.features.net[1].weight, state["net.1.weight"].double())
    ep = random_episodes(2, 3, 2, 2, size=4, dtype=torch.float64)
    params = list(model.parameters())
    grad = torch.autograd.grad(model.loop_meta_loss(ep), params)
    g = torch.Generator().manual_seed(1)
    eps = 1e-5
    for _ in range(3):
        v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(params, v):
                    p.add_(sign * eps * d)
            values.append(model.loop_meta_loss(ep).item())
            with torch.no_grad():
                for p, d in zip(params, v):
                    p.sub_(sign * eps * d)
        fd = (values[0] - values[1]) / (2 * eps)
        analytic = sum(float((gr * d).sum()) for gr, d in zip(grad, v))
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)


# ---- the pre-training on the real Omniglot --------------------------------------------------------------------


@pytest.mark.integration
def test_pretraining_sees_the_training_images_and_no_labels(data_dir, tmp_path, monkeypatch):
    # structurally: the pre-training pool is images and their normalisation, and the loop gets a tensor
    assert [f.name for f in dataclasses.fields(pretraining.UnlabelledImages)] == ["images", "mean", "std"]
    seen: list = []
    step = RotationPretraining.training_step

    def spy(self, batch, batch_idx):
        seen.append(batch)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(RotationPretraining, "training_step", spy)
    req = pretraining.PretrainRequest(
        protocol="omniglot-5w1s",
        backbone="ssl-small",
        steps=3,
        batch_size=8,
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "results"),
        progress=False,
    )
    out = pretraining.pretrain(req, log=quiet)
    assert len(seen) == 3 and all(isinstance(b, torch.Tensor) and b.shape == (8, 1, 28, 28) for b in seen)
    # every image seen is one of the training split's images, upright; the rotated copies that are classes of
    # their own in the protocol are not in the pool
    store = load_store("omniglot", 28, 1, str(data_dir))
    rows = split_rows(store, OMNIGLOT.train)
    train = {bytes(store.images[int(r)].numpy()) for r in rows}
    mean, std = torch.tensor(store.mean).view(1, 1, 1), torch.tensor(store.std).view(1, 1, 1)
    for batch in seen:
        for x in batch:
            raw = torch.round((x * std + mean) * 255).to(torch.uint8)
            assert bytes(raw.numpy()) in train
    blob = torch.load(out["path"], weights_only=True)
    assert out["sha256"] == sha256_file(out["path"]) and out["path"].endswith(f"-{out['sha256'][:12]}.pt")
    assert Path(out["path"]).parent == tmp_path / "results" / "checkpoints" / "ssl"
    assert blob["kind"] == CHECKPOINT_KIND and blob["ssl"] == "rotation" and blob["images"] == len(rows)
    assert (blob["protocol"], blob["protocol_version"], blob["train_split"]) == (
        "omniglot-5w1s",
        OMNIGLOT.version,
        OMNIGLOT.train.label,
    )
    assert (blob["backbone"], blob["channels"], blob["image_size"], blob["steps"], blob["seed"]) == (
        "ssl-small",
        1,
        28,
        3,
        0,
    )
    assert set(blob["state_dict"]) == set(SmallConv(1, 28).state_dict()) and blob["data"]["omniglot"]
    assert 0 <= blob["pretext_accuracy"] <= 1


@pytest.mark.integration
def test_pretrain_then_ssl_methods_then_verify_on_omniglot(data_dir, tmp_path, capsys):
    results, common = tmp_path / "results", ["--data-dir", str(data_dir), "--device", "cpu", "--quiet"]
    args = ["pretrain", "--protocol", "omniglot-5w1s", "--backbone", "ssl-small", "--steps", "2", "--batch-size", "8"]
    assert main([*args, "--results", str(results), *common]) == 0
    printed = capsys.readouterr().out
    path = re.search(r"^wrote (\S+)$", printed, re.M).group(1)
    sha = re.search(r"^sha256 ([0-9a-f]{64})$", printed, re.M).group(1)
    assert sha256_file(path) == sha and f"--hparam init={path}" in printed
    records = {}
    for method, hp in (("protonet-ssl", []), ("maml-ssl", ["meta_batch=2", "eval_inner_steps=1", "eval_batch=10"])):
        hparams = [x for h in [f"init={path}", "backbone=ssl-small", *hp] for x in ("--hparam", h)]
        run = ["evaluate", "--method", method, "--train-steps", "2", "--episodes", "10", "--select", "final"]
        assert main([*run, *hparams, "--results", str(results), *common]) == 0
        records[method] = Path(re.search(r"^wrote (\S+\.json)$", capsys.readouterr().out, re.M).group(1))
        rec = json.loads(records[method].read_text())
        assert rec["method"]["hparams"]["init"] == path and rec["method"]["hparams"]["init_sha256"] == sha
    for method, record in records.items():
        report = verify(record, device="cpu", data_dir=str(data_dir))
        assert report.passed, report.format()
        assert any("init checkpoint" in n and "matches the record" in n for n in report.notes), method
    # the init checkpoint changes (one weight): the chain is broken, and verify says where
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["net.0.weight"][0, 0, 0, 0] += 1.0
    torch.save(blob, path)
    report = verify(records["protonet-ssl"], device="cpu", data_dir=str(data_dir))
    assert not report.passed and not report.seeds
    assert any("init checkpoint" in p and "did not start from this file" in p for p in report.problems)
    assert main(["verify", str(records["maml-ssl"]), "--data-dir", str(data_dir), "--device", "cpu"]) == 1
    capsys.readouterr()
    Path(path).unlink()  # and once it is gone, verify cannot check the chain at all
    with pytest.raises(VerifyError, match="init checkpoint .* is missing"):
        verify(records["protonet-ssl"], device="cpu", data_dir=str(data_dir))
