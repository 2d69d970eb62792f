"""A sweep's plan, without Ray or data: search spaces beside the methods, seeded random draws, grids, trial
identities, sweep files, the refusals that come before any work, and the page's view of a selection."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

import baselines  # noqa: F401  (registers the built-in methods)
from benchmark.cli import main
from benchmark.cli.sweep import add_sweep_parser, spec_from_args
from benchmark.core.errors import BenchError
from benchmark.methods import ALGORITHMS, Choice, LogUniform, Uniform
from benchmark.page.sweeps import sweep_part
from benchmark.sweep import SweepSpec, expand


def spec(**kw) -> SweepSpec:
    return SweepSpec(**{"methods": ("protonet",), "protocols": ("omniglot-5w1s",), "seeds": (0,), **kw})


def parse(*argv: str):
    ap = argparse.ArgumentParser()
    add_sweep_parser(ap.add_subparsers(dest="command"))
    return spec_from_args(ap.parse_args(["sweep", *argv]))


def test_every_search_space_draws_hyper_parameters_its_method_accepts():
    spaces = {name: cls for name, cls in ALGORITHMS.items() if cls.SEARCH_SPACE}
    assert {"protonet", "maml", "fomaml", "anil", "finetune", "matching"} <= set(spaces)
    rng = np.random.default_rng(0)
    for name, cls in spaces.items():
        assert set(cls.SEARCH_SPACE) <= set(cls.defaults()), name
        for _ in range(20):
            drawn = {k: d.sample(rng) for k, d in cls.SEARCH_SPACE.items()}
            hp = cls.resolve_hparams(drawn)  # in bounds, of the defaults' types
            assert all(type(hp[k]) is type(cls.defaults()[k]) for k in drawn), (name, drawn)


def test_distributions_stay_in_their_ranges():
    rng = np.random.default_rng(1)
    xs = [LogUniform(1e-4, 1e-2).sample(rng) for _ in range(2000)]
    assert min(xs) >= 1e-4 and max(xs) <= 1e-2
    assert 0.4 < np.mean(np.log10(xs) < -3) < 0.6  # half the mass below the geometric middle
    assert {Choice((1, 2, 3)).sample(rng) for _ in range(200)} == {1, 2, 3}
    assert all(0 <= Uniform(0, 1).sample(rng) <= 1 for _ in range(100))
    with pytest.raises(ValueError):
        LogUniform(0, 1)


def test_random_search_is_a_pure_function_of_the_sweep_seed():
    a, again = expand(spec(trials=3, seed=7)), expand(spec(trials=3, seed=7))
    assert [t.key for t in a] == [t.key for t in again] and len({t.config for t in a}) == 3
    other = expand(spec(trials=3, seed=8))
    assert {t.config for t in a}.isdisjoint({t.config for t in other})
    # more trials draw more configurations and keep the first ones: a larger sweep resumes a smaller one
    more = expand(spec(trials=5, seed=7))
    assert [t.key for t in more[:3]] == [t.key for t in a]
    # a fixed value is not searched, and is the same in every trial
    fixed = expand(spec(trials=3, seed=7, hparams={"lr_step": 500}))
    assert all(t.hparams["lr_step"] == 500 and "lr_step" not in t.searched for t in fixed)
    assert all(0 < t.hparams["lr"] < 1 for t in fixed)


def test_a_trial_is_named_by_its_full_configuration():
    trials = expand(spec(seeds=(0, 1, 2), grid={"lr": ("0.001", "1e-3", "0.01")}))
    assert len(trials) == 6  # "0.001" and "1e-3" are one configuration, run once
    assert len({t.key for t in trials}) == 6 and len({t.config for t in trials}) == 2
    assert [t.index for t in trials] == [0, 0, 0, 1, 1, 1]
    longer = expand(spec(seeds=(0, 1, 2), grid={"lr": ("0.001", "0.01")}, train_steps=10))
    assert {t.key for t in longer}.isdisjoint({t.key for t in trials})  # the budget is part of the identity
    assert all(t.run_id == f"trial-{t.key[:16]}" for t in trials)


def test_refusals_come_before_any_work(tmp_path):
    with pytest.raises(BenchError, match="not both"):
        spec(trials=2, grid={"lr": (1e-3,)})
    with pytest.raises(BenchError, match="no validation split"):
        expand(spec(protocols=("omniglot-lake-5w1s",), grid={"lr": (1e-3, 1e-2)}))
    with pytest.raises(BenchError, match="declares no search space"):
        expand(spec(methods=("siamese",), trials=2))
    with pytest.raises(BenchError, match="lr=-1.0: a learning rate must be positive"):
        expand(spec(grid={"lr": ("0.001", "-1")}))
    with pytest.raises(BenchError, match="both fixed"):
        spec(hparams={"lr": 1e-3}, grid={"lr": (1e-3,)})
    bad = tmp_path / "sweep.toml"
    bad.write_text('methods = ["protonet"]\nlearning_rate = 3\n')
    with pytest.raises(BenchError, match="unknown setting 'learning_rate'"):
        parse(str(bad))


def test_a_sweep_file_and_the_command_line_say_the_same(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('method = "maml"\nprotocols = ["omniglot-5w1s"]\nseeds = [0, 1]\ntrials = 2\nseed = 3\n')
    yaml = tmp_path / "s.yaml"
    yaml.write_text("methods: [maml]\nprotocol: omniglot-5w1s\nseeds: [0, 1]\ntrials: 2\nseed: 3\n")
    cli = parse("--method", "maml", "--seeds", "0", "1", "--trials", "2", "--sweep-seed", "3")  # omniglot-5w1s: default
    keys = [[t.key for t in expand(s)] for s in (parse(str(toml)), parse(str(yaml)), cli)]
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 4
    assert parse(str(toml), "--trials", "1").trials == 1  # an option given overrides the file


def test_dry_run_lists_the_trials_and_runs_nothing(tmp_path, capsys):
    argv = ["sweep", "--method", "protonet", "maml", "--seeds", "0", "1", "--trials", "2", "--dry-run"]
    assert main([*argv, "--results", str(tmp_path / "r"), "--sweeps", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "8 trials: 0 done, 0 skipped (recorded before), 0 failed, 8 not run (dry run)" in out
    assert out.count("pending") == 8 and "inner_lr=" in out and "lr_step=" in out
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()


def test_a_logger_that_is_not_installed_is_named_with_its_install_command(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["sweep", "--logger", "wandb", "--dry-run", "--sweeps", str(tmp_path)]) == 2
    assert "--logger wandb needs the wandb package: pip install wandb" in capsys.readouterr().err


def test_the_page_shows_a_selection_and_survives_a_hostile_section():
    record = {
        "sweep": {
            "name": "s_1",
            "role": "selected",
            "rule": "best-mean-val",
            "folder": "../sweeps/s_1",
            "config": 1,
            "configs": 2,
            "hparams": {"lr": 0.00123},
            "val_accuracy": 0.9,
            "trials": ["trial-a", "trial-b"],
            "candidates": [
                {"config": 0, "hparams": {"lr": 0.01}, "seeds": [0, 1], "val_accuracy": 0.8, "trials": ["t0", "t1"]},
                {"config": 1, "hparams": {"lr": 0.00123}, "seeds": [0, 1], "val_accuracy": 0.9, "trials": ["a", "b"]},
            ],
        }
    }
    part = sweep_part(record)
    assert part is not None and part.candidates is not None
    assert "configuration 1 of 2" in part.caption and "lr=0\\.00123" in part.caption and "90.00%" in part.caption
    assert "\\.\\./sweeps/s\\_1" in part.caption  # the trials' folder, escaped for markdown
    assert part.candidates["Selected"].tolist() == ["", "✔"]
    assert part.candidates["Validation (%)"].tolist() == ["80.00", "90.00"]
    assert sweep_part({"run_id": "x"}) is None
    trial = sweep_part({"sweep": {"name": "s", "role": "trial", "index": 3}})
    assert trial is not None and "configuration 3" in trial.caption and trial.candidates is None
    hostile = {"name": "*x*", "role": "selected", "val_accuracy": "9" * 5, "hparams": [1], "candidates": "no"}
    odd = sweep_part({"sweep": hostile})
    assert odd is not None and odd.candidates is None and "\\*x\\*" in odd.caption
