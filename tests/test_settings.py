"""A new setting is added beside the others without editing them: this file defines one (held-out image
classification, scored per test image) with the public hooks only, and it runs, writes valid records,
is ranked with its own paired units, compared, and gets its own tab on the page."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest
from test_app import APP

from benchmark.cli.main import main
from benchmark.methods import MetaLearner, TaskInfo
from benchmark.page import board as boards
from benchmark.protocols import PROTOCOLS, EpisodeSpec, Protocol, SplitSpec, Stage
from benchmark.records import mean_ci
from benchmark.run import RunConfig, fit
from benchmark.settings import SETTINGS, PageSpec, Scored, Setting, Trained, check_record, evaluate

SIZE, CLASSES, PER_CLASS = 6, 4, 30


@dataclass
class ToyData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    data_fingerprints: dict


def blobs(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class is a fixed pattern plus noise; the patterns do not depend on `seed`, the noise does."""
    centres = torch.randn(CLASSES, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(CLASSES).repeat_interleave(n)
    return centres[y] + 0.8 * torch.randn(len(y), 1, SIZE, SIZE, generator=g), y


class HeldOut(Setting):
    name = "toy-held-out"
    title = "Held-out images (test)"
    description = "classify every held-out image among the training classes"
    unit = "test image"
    order = 90
    page = PageSpec(columns=("Rank", "Method", "Accuracy (%)", "Images", "Seeds"), unit_label="test image")
    section_schema = {
        "run": {
            "type": "object",
            "required": ["image_correct"],
            "properties": {"image_correct": {"type": "array", "items": {"enum": [0, 1]}}},
        },
        "summary": {"type": "object", "required": ["n_images"]},
    }

    def prepare(self, protocol, device, cfg, shared):
        tx, ty = blobs(0, PER_CLASS)
        vx, vy = blobs(1, PER_CLASS // 2)
        return ToyData(tx, ty, vx, vy, {"toy": "t" * 64})

    def build_model(self, cls, data, hp):
        return cls(TaskInfo(CLASSES, 1, 1, SIZE, 1, CLASSES), **hp)

    def train(self, model, data, cfg, steps, seed, device):
        def draw(g):
            idx = torch.randint(len(data.train_y), (16,), generator=g)
            return data.train_x[idx], data.train_y[idx]

        seconds, done = fit(model, draw, steps, seed, device, torch.device("cpu"), progress=False)
        return Trained(seconds, done)

    def score(self, model, data, device, progress=True):
        model.eval()
        with torch.no_grad():
            correct = (model(data.test_x).argmax(-1) == data.test_y).double().numpy()
        return Scored(correct, 0.0)

    def protocol_section(self, protocol, data):
        return {
            "name": protocol.name,
            "version": protocol.version,
            "setting": protocol.setting,
            "datasets": ["toy"],
            "n_test_images": len(data.test_y),
        }

    def run_section(self, scored):
        return {"image_correct": [int(c) for c in scored.units], "mean": float(scored.units.mean())}

    def summary_section(self, runs):
        return {
            "mean": float(np.mean([r["mean"] for r in runs])),
            "n_seeds": len(runs),
            "n_images": len(runs[0]["image_correct"]),
            "seed_ci95": None if len(runs) < 2 else mean_ci([r["mean"] for r in runs]).ci95,
        }

    def units(self, record):
        return np.asarray([r["image_correct"] for r in record["runs"]], dtype=np.float64).mean(axis=0)

    def pairing_key(self, record):
        return (record["protocol"]["version"], record["summary"]["n_images"])


class Linear(MetaLearner):
    name = "toy-linear"
    paper = "test"
    training_data = "batches"
    HPARAMS = {"batch_size": 16}

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.head = torch.nn.Linear(SIZE * SIZE, task.ways)

    def forward(self, x):
        return self.head(x.flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Untrained(Linear):
    name = "toy-untrained"


@pytest.fixture
def held_out():
    setting = HeldOut()
    SETTINGS.register(setting.name, setting)
    proto = Protocol(
        name="toy-held-out-v1",
        version=1,
        setting=setting.name,
        description="toy",
        stages=(Stage(train=SplitSpec("toy"), test=(SplitSpec("toy"),)),),
        episode=EpisodeSpec(CLASSES, 1, 1),
        image_size=SIZE,
        channels=1,
        train_steps=60,
    )
    PROTOCOLS.register(proto.name, proto)
    yield setting, proto
    PROTOCOLS.unregister(proto.name)
    SETTINGS.unregister(setting.name)


def test_a_new_setting_runs_records_ranks_and_compares(held_out, tmp_path, capsys):
    setting, proto = held_out
    results = tmp_path / "results"
    written = {}
    for cls, steps in ((Linear, 60), (Untrained, 0)):
        cfg = RunConfig(
            cls.name,
            (proto.name,),
            seeds=(0, 1),
            train_steps=steps,
            device="cpu",
            results_dir=str(results),
            progress=False,
        )
        ((record, path),) = evaluate(cfg, method_cls=cls, log=lambda _m: None)
        check_record(record)  # its own section, checked by its own schema and hooks
        assert record["setting"] == setting.name and path.parts[-4] == setting.name
        assert len(record["runs"][0]["image_correct"]) == CLASSES * (PER_CLASS // 2)
        written[cls.name] = path
    board = boards.load(results)
    assert not board.warnings and setting.name in board.settings
    t = board.table.set_index("method")
    assert t.loc["toy-linear", "mean"] > 0.9 > t.loc["toy-untrained", "mean"]
    assert t.loc["toy-linear", "rank"] == 1 and t.loc["toy-untrained", "rank"] == 2  # paired over test images
    assert t.loc["toy-linear", "n_units"] == CLASSES * (PER_CLASS // 2)
    assert main(["compare", str(written["toy-linear"]), str(written["toy-untrained"])]) == 0
    out = capsys.readouterr().out
    assert "paired test images" in out and "A is significantly better than B" in out


def test_a_new_setting_gets_its_own_tab(held_out, tmp_path, monkeypatch):
    setting, proto = held_out
    results = tmp_path / "results"
    cfg = RunConfig(Linear.name, (proto.name,), train_steps=20, device="cpu", results_dir=str(results), progress=False)
    evaluate(cfg, method_cls=Linear, log=lambda _m: None)
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(results))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    labels = [t.label for t in at.tabs]
    assert labels[-2:] == [setting.name, "Studies"] and labels[:2] == ["few-shot", "cross-domain"]
    tab = at.tabs[-2]
    shown = [df.value for df in tab.dataframe]
    assert any("toy-linear" in df.to_string() for df in shown)
    per_protocol = shown[-1]  # below the overview: the setting's own columns, in its order
    assert list(per_protocol.columns) == list(setting.page.columns)
    assert per_protocol["Images"].tolist() == [CLASSES * (PER_CLASS // 2)]
    headings = [m.value for m in tab.markdown]
    assert not any("Accuracy vs shots" in h for h in headings)  # the setting asked for no plots
    assert json.dumps(labels)  # plain strings, as the page shows them
