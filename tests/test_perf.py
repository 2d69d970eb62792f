"""`bench perf` runs end to end and writes its numbers; the batched and looped MAML objectives agree."""

from __future__ import annotations

import json

import pytest

from benchmark.cli.main import main
from benchmark.cli.perf import GRADIENT_METHODS

# the three implementations behind the six methods (the shared inner loop, Reptile's, the LSTM's); every
# method's batched-vs-loop agreement is also tested in test_gradient_methods.py
TIMED = ["maml", "reptile", "meta-lstm"]
assert set(TIMED) <= set(GRADIENT_METHODS)


@pytest.mark.integration
def test_bench_perf_measures_and_writes(data_dir, tmp_path, capsys):
    out = tmp_path / "perf.json"
    rc = main(
        [
            "perf",
            "--device",
            "cpu",
            "--tasks",
            "2",
            "--repeats",
            "1",
            "--inner-steps",
            "1",
            "--eval-episodes",
            "10",
            "--eval-batch",
            "5",
            "--methods",
            *TIMED,
            "--eval-methods",
            "protonet",
            "siamese",
            "--method-episodes",
            "4",
            "--data-dir",
            str(data_dir),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "meta-training throughput" in printed and "measuring ProtoNet" in printed  # progress lines
    result = json.loads(out.read_text())
    assert result["size"] == {"tasks": 2, "repeats": 1, "eval_episodes": 10, "eval_batch": 5, "method_episodes": 4}
    assert sorted(result["methods"]) == sorted(TIMED)
    for name, m in result["methods"].items():
        assert m["vmap_tasks_per_s"] > 0 and m["loop_tasks_per_s"] > 0, name
        assert m["speedup"] == pytest.approx(m["vmap_tasks_per_s"] / m["loop_tasks_per_s"]), name
        # the same objective, to float32 rounding (Reptile's small surrogate loss carries Adam-scaled rounding
        # to about 5e-4 relative; the float64 tests in test_gradient_methods.py check it to 1e-9)
        assert m["loss_vmap"] == pytest.approx(m["loss_loop"], rel=2e-3), name
        assert f"  {name} " in printed, name  # a ratio line per method
    assert result["protonet"]["fixed_episodes_per_s"] > 0
    assert sorted(result["evaluation"]) == ["protonet", "siamese"]  # a scoring line per method
    for name, e in result["evaluation"].items():
        assert e["episodes"] == 4 and e["episodes_per_s"] > 0 and f"  {name} " in printed, name


def test_bench_perf_times_the_evaluation_of_every_method_that_runs_the_protocol():
    import baselines  # noqa: F401
    from benchmark.cli.perf import eval_methods

    names = eval_methods()
    assert {"protonet", "finetune", "maml", "siamese", "simpleshot"} <= set(names)


def test_bench_perf_refuses_a_method_without_a_reference_loop(capsys):
    assert main(["perf", "--device", "cpu", "--methods", "protonet"]) == 2
    assert "no per-task reference loop" in capsys.readouterr().err
