"""`bench perf` runs end to end and writes its numbers; the batched and looped MAML objectives agree."""

from __future__ import annotations

import json

import pytest

from benchmark.cli.main import main


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
            "--data-dir",
            str(data_dir),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "measuring MAML" in printed and "measuring ProtoNet" in printed  # progress lines
    result = json.loads(out.read_text())
    assert result["size"] == {"tasks": 2, "repeats": 1, "eval_episodes": 10, "eval_batch": 5}
    maml = result["maml"]
    assert maml["vmap_tasks_per_s"] > 0 and maml["loop_tasks_per_s"] > 0
    assert maml["loss_vmap"] == pytest.approx(maml["loss_loop"], rel=1e-4)
    assert result["protonet"]["fixed_episodes_per_s"] > 0
