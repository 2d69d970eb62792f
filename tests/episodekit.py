"""Random episodes for method tests (the shapes and label layout of the harness's `Episodes`), and a tiny
backbone that keeps method tests and smoke runs cheap."""

from __future__ import annotations

import torch
from torch import nn

from benchmark.episodes import Episodes
from benchmark.methods import BatchStatNorm2d


def random_episodes(b, n, k, q, channels=1, size=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(b, n * k, channels, size, size, generator=g, dtype=dtype)
    qx = torch.randn(b, n * q, channels, size, size, generator=g, dtype=dtype)
    sy = torch.arange(n).repeat_interleave(k).expand(b, -1).contiguous()
    qy = torch.stack([torch.arange(n).repeat_interleave(q)[torch.randperm(n * q, generator=g)] for _ in range(b)])
    return Episodes(sx, sy, qx, qy, n, k)


class TinyBackbone(nn.Module):
    """A test-only feature extractor: pool to 4x4, one 3x3 conv with batch norm. Keeps 84px smoke runs cheap."""

    def __init__(self, in_channels: int, image_size: int, running_stats: bool = True):
        super().__init__()
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8) if running_stats else BatchStatNorm2d(8),
            nn.ReLU(),
        )
        self.out_dim = 8 * 4 * 4

    def forward(self, x):
        return self.net(x).flatten(1)


class SmoothMlp(nn.Module):
    """A smooth, batch-norm-free backbone (one tanh layer), so finite differences of a meta-objective through it
    are exact to O(eps^2): what the second-order gradient checks use."""

    def __init__(self, in_channels: int, image_size: int, running_stats: bool = True):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 6), nn.Tanh())
        self.out_dim = 6

    def forward(self, x):
        return self.net(x)


class SmallConv(nn.Module):
    """Conv-4 with 16 filters instead of 64: the same shape of network (a 16-d feature at 28px), so the
    papers' step sizes suit it, and a short CPU run learns Omniglot at a fraction of Conv-4's cost."""

    def __init__(self, in_channels: int, image_size: int, running_stats: bool = True):
        super().__init__()
        layers, ch = [], in_channels
        for _ in range(4):
            norm = nn.BatchNorm2d(16) if running_stats else BatchStatNorm2d(16)
            layers += [nn.Conv2d(ch, 16, 3, padding=1), norm, nn.ReLU(), nn.MaxPool2d(2)]
            ch = 16
        self.net = nn.Sequential(*layers)
        self.out_dim = 16 * (image_size // 16) ** 2

    def forward(self, x):
        return self.net(x).flatten(1)


def learning_scores(method: str, steps: int, hparams: dict, data_dir) -> tuple[float, float]:
    """(trained, untrained) mean accuracy of `method` on the first 50 fixed test episodes of omniglot-5w1s,
    after `steps` training steps and after none, on the CPU, with `small` (SmallConv) and `tiny`
    (TinyBackbone) registered as backbones for the runs. The learning tests' bound: a method at chance
    (20%), or one whose training does nothing, cannot pass `trained > 0.40 and trained > untrained + gain`."""
    from benchmark import settings as harness
    from benchmark.methods import BACKBONES

    backbones = {"small": SmallConv, "tiny": TinyBackbone}
    added = [n for n in backbones if n not in BACKBONES]
    for n in added:
        BACKBONES.register(n, backbones[n])
    try:
        scores = []
        for n in (steps, 0):
            record, _ = harness.run(
                method,
                "omniglot-5w1s",
                episodes=50,
                train_steps=n,
                hparams=hparams,
                select="final",
                device="cpu",
                data_dir=str(data_dir),
                write=False,
                progress=False,
                log=lambda _m: None,
            )
            scores.append(record["summary"]["mean"])
    finally:
        for n in added:
            BACKBONES.unregister(n)
    return scores[0], scores[1]


def refused_before_data(args: list[str], tmp_path, capsys) -> str:
    """Run `bench evaluate ARGS` against an empty data folder and results folder that do not exist; assert it
    refuses (exit 2) without looking for data or creating either folder, and return what it printed."""
    from benchmark.cli import main

    empty, results = tmp_path / "no-data-here", tmp_path / "r"
    rc = main(["evaluate", *args, "--data-dir", str(empty), "--results", str(results)])
    err = capsys.readouterr().err
    assert rc == 2 and "not prepared" not in err, err
    assert not results.exists() and not empty.exists()
    return err
