"""Architecture search on the real Omniglot: `bench search` end to end for both strategies (a tiny supernet and
budget), and a genotype's way through file -> backbone -> record -> `bench verify`, which refuses the record once
the genotype has changed. Also the committed genotypes: each loads, builds and is a backbone."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark import settings as harness
from benchmark.cli import main
from benchmark.methods import BACKBONES, GENOTYPES, make_backbone
from benchmark.methods.genotype import GENOTYPE_DIR, Genotype, load_genotype, register_genotype, write_genotype
from benchmark.methods.nas_space import DARTS_OPS, count_params
from benchmark.nas import run as nas_run
from benchmark.page import board as page_board
from benchmark.page import nas as nas_page
from benchmark.submissions import verify as verifying

TINY = ["--protocol", "omniglot-5w1s", "--width", "2", "--cells", "1", "--hparam", "meta_batch=1", "--quiet"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "strategy,extra", [("darts", ["--hparam", "order=1"]), ("rl", ["--objective", "maml", "--hparam", "candidates=2"])]
)
def test_bench_search_writes_a_genotype_with_its_cost(strategy, extra, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nas_run, "DERIVE_EPISODES", 4)  # the RL derivation's validation episodes, kept tiny here
    name = f"{strategy}-omniglot-v99"
    out = tmp_path / f"{name}.json"
    args = ["search", "--strategy", strategy, "--dataset", "omniglot", *TINY, *extra, "--steps", "2", "--seed", "5"]
    args += ["--name", name, "--out", str(out), "--data-dir", str(data_dir), "--checkpoint", str(tmp_path / "c.pt")]
    assert main(args) == 0
    g = load_genotype(out)
    s = g.search
    assert s["objective"] == ("maml" if strategy == "rl" else "protonet")
    assert s["strategy"] == strategy and s["seed"] == 5 and s["protocol"] == "omniglot-5w1s" and s["steps"] == 2
    assert s["episodes"]["train"] == 2 and s["episodes"]["val"] >= 2 and s["wall_s"] > 0
    assert s["device"]["type"] == "cpu" and s["space"]["channels"] == 2 and s["data"]["omniglot"]
    conv4 = g.params["references"]["conv4"]
    assert g.params["count"] == count_params(lambda: g.build(1, 28)) and abs(g.params["count"] - conv4) < 0.1 * conv4
    assert not (tmp_path / "c.pt").exists()  # the search finished: its genotype replaces the checkpoint
    assert f"wrote {out}" in capsys.readouterr().out


def test_bench_search_refuses_bad_requests_before_reading_data(tmp_path, capsys):
    def fails(*args: str) -> str:
        assert main(["search", *args, "--data-dir", str(tmp_path / "nothing")]) == 2
        return capsys.readouterr().err

    assert "choose omniglot, caltech101" in fails("--strategy", "darts", "--dataset", "mnist")
    assert "has no hyper-parameter(s) bogus" in fails(
        "--strategy", "darts", "--dataset", "omniglot", "--hparam", "bogus=1"
    )
    assert "must be lower-case" in fails("--strategy", "rl", "--dataset", "omniglot", "--name", "Found")
    taken = tmp_path / "darts-omniglot-v7.json"
    taken.write_text("{}")
    assert "never overwritten" in fails(
        "--strategy", "darts", "--dataset", "omniglot", "--out", str(taken), "--name", "darts-omniglot-v7"
    )
    assert "uses omniglot, not --dataset caltech101" in fails(
        "--strategy", "darts", "--dataset", "caltech101", "--protocol", "omniglot-5w1s"
    )
    assert "--resume: no checkpoint" in fails(
        "--strategy",
        "darts",
        "--dataset",
        "omniglot",
        "--resume",
        "--checkpoint",
        str(tmp_path / "none.pt"),
        "--name",
        "darts-omniglot-v8",
    )


@pytest.fixture
def genotype(tmp_path):
    cell = ((("avg_pool_3x3", 0),), (("skip_connect", 0), ("sep_conv_3x3", 1)))
    g = Genotype(
        "nastest-omniglot-v1",
        "darts-fewshot-v1",
        DARTS_OPS,
        cell,
        2,
        4,
        search={"strategy": "darts", "seed": 0, "wall_s": 12.5, "episodes": {"train": 8, "val": 8}},
    )
    g = load_genotype(write_genotype(g, tmp_path / f"{g.name}.json"))  # from its file, as the registry reads it
    register_genotype(g)
    yield g
    BACKBONES.unregister(g.name)
    GENOTYPES.pop(g.name, None)


@pytest.mark.integration
def test_a_genotype_goes_from_file_to_backbone_to_record_to_verify(genotype, data_dir, tmp_path):
    record, path = harness.run(
        "protonet",
        "omniglot-5w1s",
        episodes=10,
        train_steps=2,
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "r"),
        progress=False,
        hparams={"backbone": genotype.name, "eval_batch": 5, "train_ways": 10},
        log=lambda _m: None,
    )
    arch = record["method"]["architecture"]
    assert record["method"]["backbone"] == genotype.name and arch["genotype"] == genotype.name
    assert arch["fingerprint"] == genotype.fingerprint
    assert arch["params"] == count_params(lambda: genotype.build(1, 28))
    assert arch["search"] == {"strategy": "darts", "seed": 0, "wall_s": 12.5, "episodes": {"train": 8, "val": 8}}
    assert arch["reference_params"]["conv4"] == count_params(lambda: make_backbone("conv4", 1, 28))
    # the page's architecture view, from the records alone: the cell's size and cost beside the references' sizes
    board = page_board.load_files(tmp_path / "r")
    (table,) = nas_page.architecture_tables(board.table, board.records).values()
    rows = {r["Backbone"]: r for r in table.to_dict("records")}
    assert rows[genotype.name]["Weights"] == f"{arch['params']:,}"
    assert (
        rows[genotype.name]["Search cost"].startswith("0.2 min") and "16 episodes" in rows[genotype.name]["Search cost"]
    )
    assert rows[genotype.name]["vs Conv-4, same method (points)"] == "no Conv-4 record"
    assert rows["resnet12"]["Weights"] == f"{arch['reference_params']['resnet12']:,}"
    assert rows["conv4"]["Accuracy (%)"] == "no record yet"

    report = verifying.verify(path, device="cpu", data_dir=str(data_dir))
    assert report.passed, report.format()
    assert f"backbone genotype {genotype.name}" in report.format()

    # the same name with another architecture: the checkpoint no longer describes the backbone
    BACKBONES.unregister(genotype.name)
    register_genotype(genotype.with_channels(5, {}))
    changed = verifying.verify(path, device="cpu", data_dir=str(data_dir))
    assert not changed.passed and "the architecture changed since the record was made" in changed.format()


def test_committed_genotypes_are_backbones_with_their_cost():
    files = sorted(GENOTYPE_DIR.glob("*.json"))
    assert files, "no committed genotype"
    for path in files:
        g = load_genotype(path)
        assert g.name in BACKBONES and GENOTYPES[g.name].fingerprint == json.loads(path.read_text())["fingerprint"]
        s = g.search
        assert {"strategy", "seed", "wall_s", "episodes", "device", "protocol"} <= set(s), path
        for channels, size in ((1, 28), (3, 84)):
            net = make_backbone(g.name, channels, size, running_stats=True)
            assert net(torch.randn(2, channels, size, size)).shape == (2, net.out_dim)
        size_at = (g.params["in_channels"], g.params["image_size"])
        assert g.params["count"] == count_params(lambda g=g, at=size_at: g.build(*at))
