"""Feature extractors shared by the algorithms: Conv-4 (Vinyals et al. 2016) and ResNet-12 (Oreshkin et al. 2018)."""
from __future__ import annotations

import torch
from torch import nn

from .registry import Registry

BACKBONES: Registry = Registry("backbone")


def _bn(ch: int, running_stats: bool) -> nn.BatchNorm2d:
    # MAML-style methods adapt functionally per task; batch statistics keep them free of shared state.
    return nn.BatchNorm2d(ch, track_running_stats=running_stats)


class Conv4(nn.Module):
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
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), _bn(cout, running_stats), nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _bn(cout, running_stats), nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _bn(cout, running_stats))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _bn(cout, running_stats))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x):
        return self.out(self.body(x) + self.skip(x))


class ResNet12(nn.Module):
    """Four residual blocks (64-160-320-640 channels), each three 3x3 convs and a 2x2 max-pool, then global average pool."""

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


def make_backbone(name: str, in_channels: int, image_size: int, running_stats: bool = True) -> nn.Module:
    return BACKBONES.get(name)(in_channels, image_size, running_stats=running_stats)
