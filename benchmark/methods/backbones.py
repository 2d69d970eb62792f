"""Feature extractors shared by the algorithms: Conv-4 (Vinyals et al. 2016) and ResNet-12 (Oreshkin et al. 2018)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..core.registry import Registry


class Backbone(nn.Module):
    """A feature extractor: images [N, C, H, W] -> features [N, out_dim]."""

    out_dim: int


BACKBONES: Registry[type[nn.Module]] = Registry("backbone")


class BatchStatNorm2d(nn.Module):
    """Batch normalisation from the current batch's statistics only, written with plain tensor ops.

    MAML-style methods adapt functionally per task and need no running statistics. nn.BatchNorm2d
    without running stats would do the same forward, but under `vmap` over `torch.func.grad` its
    second-order gradients come out wrong (the fused kernel's batching rule; tests compare against
    a per-task loop and finite differences), while these plain ops differentiate exactly.
    """

    stats_rows = 0  # > 0: statistics from the first rows only (see `statistics_from`)
    groups = 1  # > 1: the batch is that many equal groups, each normalised with its own statistics

    def __init__(self, ch: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups > 1:
            g = x.view(self.groups, -1, *x.shape[1:])
            mean = g.mean(dim=(1, 3, 4), keepdim=True)
            var = (g - mean).pow(2).mean(dim=(1, 3, 4), keepdim=True)
            out = ((g - mean) * torch.rsqrt(var + self.eps)).view_as(x)
            return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        ref = x[: self.stats_rows] if self.stats_rows else x
        mean = ref.mean(dim=(0, 2, 3), keepdim=True)
        var = (ref - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@contextmanager
def statistics_from(module: nn.Module, rows: int = 0, groups: int = 1) -> Iterator[None]:
    """Within the block, every BatchStatNorm2d in `module` normalises a batch with the statistics of its
    first `rows` rows (a support set's statistics applied to the queries that follow it), or, with
    `groups`, each of that many equal slices of the batch with its own (many small batches in one pass)."""
    norms = [m for m in module.modules() if isinstance(m, BatchStatNorm2d)]
    for m in norms:
        m.stats_rows, m.groups = rows, groups
    try:
        yield
    finally:
        for m in norms:
            m.stats_rows, m.groups = 0, 1


def _bn(ch: int, running_stats: bool) -> nn.Module:
    return nn.BatchNorm2d(ch) if running_stats else BatchStatNorm2d(ch)


class Conv4(Backbone):
    """Four blocks of 3x3 conv (64 filters), batch norm, ReLU and 2x2 max-pool; flattened output."""

    def __init__(self, in_channels: int, image_size: int, hidden: int = 64, running_stats: bool = True):
        super().__init__()
        layers, ch = [], in_channels
        for _ in range(4):
            layers += [nn.Conv2d(ch, hidden, 3, padding=1), _bn(hidden, running_stats), nn.ReLU(), nn.MaxPool2d(2)]
            ch = hidden
        self.net = nn.Sequential(*layers)
        side = image_size
        for _ in range(4):
            side //= 2
        self.out_dim = hidden * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, running_stats: bool):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            _bn(cout, running_stats),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            _bn(cout, running_stats),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            _bn(cout, running_stats),
        )
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _bn(cout, running_stats))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x):
        return self.out(self.body(x) + self.skip(x))


class ResNet12(Backbone):
    """Four residual blocks (64-160-320-640 channels), each three 3x3 convs and a 2x2 max-pool, then global
    average pooling."""

    def __init__(self, in_channels: int, image_size: int, widths=(64, 160, 320, 640), running_stats: bool = True):
        super().__init__()
        blocks, ch = [], in_channels
        for w in widths:
            blocks.append(_ResBlock(ch, w, running_stats))
            ch = w
        self.net = nn.Sequential(*blocks)
        self.out_dim = ch

    def forward(self, x):
        return self.net(x).mean(dim=(2, 3))


BACKBONES.register("conv4", Conv4)
BACKBONES.register("resnet12", ResNet12)


def make_backbone(name: str, in_channels: int, image_size: int, running_stats: bool = True) -> Backbone:
    """A registered backbone; any module with an `out_dim` will do (tests register small ones)."""
    return BACKBONES.get(name)(in_channels, image_size, running_stats=running_stats)  # type: ignore[return-value]
