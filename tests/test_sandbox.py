"""Submitted code runs in a process of its own and cannot touch the score: it never shares a process with
the scoring, never receives query labels, and a hang, an exit or a memory grab ends in a clear error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.core.errors import BenchError
from benchmark.core.files import sha256_bytes
from benchmark.methods import TaskInfo
from benchmark.records import read_record
from benchmark.settings import episodic_training
from benchmark.submissions import frames, sandbox, submit
from benchmark.submissions.loading import SubmissionError

PROTOCOL = "omniglot-5w1s"

PIXELS = textwrap.dedent('''
    import torch
    from benchmark.methods import MetaLearner, prototypes

    class Pixels(MetaLearner):
        """Nearest class mean on raw pixels: no training, far from perfect."""
        name = "pixels"
        paper = "test"
        HPARAMS = {}

        def predict(self, support_x, support_y, query_x, ways):
            {hang}
            return -torch.cdist(query_x.flatten(2), prototypes(support_x.flatten(2), support_y, ways))

        def training_step(self, batch, batch_idx):
            return None

        def configure_optimizers(self):
            return None
''')


def write(tmp_path, prelude: str = "", hang: str = "pass") -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pixels.py"
    path.write_text(prelude + PIXELS.replace("{hang}", hang))
    return str(path)


def run(tmp_path, spec, data_dir, **kw):
    return submit.submit(
        spec,
        [PROTOCOL],
        log=lambda _m: None,
        episodes=10,
        train_steps=0,
        device="cpu",
        data_dir=str(data_dir),
        results_dir=str(tmp_path / "results"),
        progress=False,
        **kw,
    )


@pytest.mark.integration
def test_patching_the_scorer_at_import_changes_nothing(tmp_path, data_dir):
    cheat = textwrap.dedent("""
        import numpy as np
        import benchmark.settings.episodic_training as scoring
        import benchmark.records.io as io
        scoring.evaluate_model = lambda *a, **k: (np.ones(a[2].classes.shape[0]), 0.0)
        io.validate = lambda record: None
    """)
    honest = run(tmp_path / "honest", write(tmp_path / "a", ""), data_dir)
    cheated = run(tmp_path / "cheat", write(tmp_path / "b", cheat), data_dir)
    a, b = read_record(honest[0]), read_record(cheated[0])
    assert b["summary"]["mean"] < 1.0
    assert a["runs"][0]["episode_accuracies"] == b["runs"][0]["episode_accuracies"]
    assert episodic_training.evaluate_model.__module__ == "benchmark.settings.episodic_training"


@pytest.mark.integration
def test_a_hanging_predict_ends_in_a_clear_timeout(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(sandbox, "PREDICT_TIMEOUT_S", 5.0)
    # the dry check predicts on 2 episodes; the test batches are larger, and there it hangs
    spec = write(tmp_path, "import time\n", hang="if support_x.shape[0] > 2: time.sleep(3600)")
    with pytest.raises(BenchError, match="did not answer predict within 5 s"):
        run(tmp_path, spec, data_dir)
    assert not list((tmp_path / "results").rglob("*.json"))


def test_sys_exit_at_import_is_a_clear_error(tmp_path):
    spec = write(tmp_path, "import sys\nsys.exit(3)\n")
    with pytest.raises(SubmissionError, match="called sys.exit"):
        submit.submit(spec, [PROTOCOL], log=lambda _m: None, device="cpu")


def test_a_memory_grab_fails_inside_the_sandbox(tmp_path):
    spec = write(tmp_path, "grab = bytearray(64 << 30)\n")
    with pytest.raises(BenchError, match="MemoryError"):
        submit.submit(spec, [PROTOCOL], log=lambda _m: None, device="cpu")


def test_query_labels_never_reach_the_sandbox(tmp_path, monkeypatch):
    sent: list[tuple[str, set[str]]] = []
    real = frames.send

    def spy(out, header, arrays=None):
        sent.append((header.get("op"), set(arrays or {})))
        return real(out, header, arrays)

    monkeypatch.setattr(sandbox.frames, "send", spy)
    path = Path(write(tmp_path))
    box, cls = sandbox.open_submission(path, None, sha256_bytes(path.read_bytes()), "cpu")
    try:
        model = cls(TaskInfo(5, 1, 2, 28, 1, 10))
        logits = model.predict(
            torch.randn(3, 5, 1, 28, 28), torch.arange(5).expand(3, 5), torch.randn(3, 10, 1, 28, 28), 5
        )
        assert logits.shape == (3, 10, 5) and np.isfinite(logits.numpy()).all()
    finally:
        box.close()
    predicts = [keys for op, keys in sent if op == "predict"]
    assert predicts == [{"support_x", "support_y", "query_x"}]
