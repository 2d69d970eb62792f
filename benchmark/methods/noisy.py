"""The contract of methods for the noisy-label setting: classification with corrupted training labels and a
small clean meta set.

A noisy-label method is a classifier (`DomainLearner`'s backbone, linear head and `classify`) whose
`training_step` receives a `NoisyBatch` per step: training images (augmented and normalised by the harness,
identically for every method), their labels as given, some of them corrupted, each image's index in the
training set, and a batch of the clean meta set with its true labels. It never receives which labels were
corrupted, the true labels of the training images, or anything of the test set. A class says how it uses
the meta set with `noisy_labels`: "meta" (a separate clean batch each step, for the reweighting methods) or
"pooled" (the meta images are ordinary training data, drawn with the rest; `meta_x` is None), and reports,
through `example_weights`, the weight its update gives each example of a batch, which the harness records
for the training images at the end of training (a method without it weighs every example 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from ..protocols import Protocol
from .backbones import BACKBONES, Backbone, BatchStatNorm2d
from .domains import DomainLearner
from .recipes import PaperResult, Recipe

Params = dict[str, torch.Tensor]
NOISY_MODES = ("meta", "pooled")


@dataclass
class NoisyBatch:
    x: torch.Tensor  # [B, C, H, W] training images
    y: torch.Tensor  # [B] their labels as given (some corrupted)
    index: torch.Tensor  # [B] their rows in the training set (the pooled set for "pooled" methods)
    meta_x: torch.Tensor | None = None  # [M, C, H, W] clean meta images ("meta" methods)
    meta_y: torch.Tensor | None = None  # [M] their true labels


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Within the block, batch norm in training mode normalises with the batch's own statistics and leaves the
    running ones alone: look-ahead passes (and the recorded weights) must not move the statistics the
    scored model uses, and torch.func cannot trace their in-place update."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


class Conv4Lite(Backbone):
    """Conv-4's four blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool) with 32, 32, 64 and 64 filters and a
    stride-2 first convolution: a twelfth of Conv-4's arithmetic at 84px (256-d features), so that a classifier
    over 101 classes trained from scratch learns in the few hundred steps a CPU run affords."""

    def __init__(self, in_channels: int, image_size: int, running_stats: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        ch, side = in_channels, (image_size + 1) // 2
        for i, width in enumerate((32, 32, 64, 64)):
            norm = nn.BatchNorm2d(width) if running_stats else BatchStatNorm2d(width)
            layers += [nn.Conv2d(ch, width, 3, stride=2 if i == 0 else 1, padding=1), norm, nn.ReLU(), nn.MaxPool2d(2)]
            ch, side = width, side // 2
        self.net = nn.Sequential(*layers)
        self.out_dim = ch * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


BACKBONES.register("conv4-lite", Conv4Lite)

# The shared recipe on the noisy-label protocols, the same for erm, l2rw and mw-net so that only the weighting
# differs: the batch of 100 both papers use (Ren et al. 2018, Shu et al. 2019) and their weight decay of 5e-4;
# Adam at 1e-3 (DomainLearner's) instead of their SGD at 0.1 with momentum, and the small conv4-lite instead of
# their WRN-28-10 / ResNet-32, because here a network trains from scratch at 84px in the few thousand steps of
# the protocol's budget on a GPU, or a few hundred on a CPU. A GPU run may pass --hparam backbone=conv4.
NOISY_RECIPE = Recipe(
    "caltech101-noisy",
    {"backbone": "conv4-lite", "batch_size": 100, "weight_decay": 5e-4, "eval_batch": 256},
    source="Ren et al. 2018 Sec. 5.2, Shu et al. 2019 Sec. 4.1 (batch 100, weight decay 5e-4)",
    note="conv4-lite at 84px from scratch with Adam at 1e-3 (the papers: WRN-28-10 / ResNet-32 at 32px, SGD at 0.1 "
    "with momentum 0.9, 120 epochs or 60k steps); the protocol's step budget; the same for erm, l2rw and mw-net",
)
CIFAR_SOURCE = "CIFAR-10, symmetric noise; the numbers as issue 12 cites them from the authors' tables (not re-checked)"
CIFAR_NOTE = "CIFAR-10 (10 classes, 50,000 images, a deep network); here Caltech-101 from scratch: not comparable"


def cifar_anchors(sym20: float, sym40: float, sym60: float) -> dict[str, PaperResult]:
    """A method's CIFAR-10 numbers at 20/40/60% symmetric noise, shown beside the protocols with the same rate."""
    numbers = {"sym20": sym20, "sym40": sym40, "sym60": sym60}
    return {f"caltech101-noisy-{k}": PaperResult(v, None, CIFAR_SOURCE, CIFAR_NOTE) for k, v in numbers.items()}


class NoisyLearner(DomainLearner):
    """A classifier that learns from noisy labels with the help of the clean meta set (not registered)."""

    training_data: ClassVar[str] = "noisy-labels"
    noisy_labels: ClassVar[str] = "meta"
    # the clean meta batch: this many images of every class (1: 101 images on Caltech-101, about the papers' 100,
    # and, like their CIFAR-10 meta batches, every class in every batch, which a look-ahead judged on a random 100
    # of 101 classes would not have: an example would be weighed by whether its label's class was drawn)
    HPARAMS: ClassVar[dict[str, Any]] = {**DomainLearner.HPARAMS, "meta_per_class": 1}
    HPARAM_BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        **DomainLearner.HPARAM_BOUNDS,
        "meta_per_class": (1, None),
    }
    RECIPES = (NOISY_RECIPE,)

    @classmethod
    def supports(cls, protocol: Protocol) -> str | None:
        if protocol.noise is None:
            return f"{cls.name} learns from corrupted labels with a clean meta set; {protocol.name} has no label noise"
        return None

    def losses(self, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example cross-entropy [B] of the network with the given weights."""
        return F.cross_entropy(functional_call(self, (params, buffers), (x,)), y, reduction="none")

    def meta_direction(self, params: Params, buffers: Params, batch: NoisyBatch) -> Params:
        """∇θ of the clean meta batch's mean loss at `params`: the direction the look-ahead is judged along."""
        meta_x, meta_y = batch.meta_x, batch.meta_y
        if meta_x is None or meta_y is None:
            raise ValueError(f"{self.name} needs a clean meta batch each step (its noisy_labels is 'meta')")
        return grad(lambda p: self.losses(p, buffers, meta_x, meta_y).mean())(params)

    def directional_losses(
        self, params: Params, buffers: Params, batch: NoisyBatch, direction: Params
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ℓᵢ(θ), ∇θ ℓᵢ(θ) · direction), each [B], from one forward-mode pass (torch.func.jvp): every example's
        gradient dotted with one direction, without forming the per-example gradients."""
        out = jvp(lambda p: self.losses(p, buffers, batch.x, batch.y), (params,), (direction,))  # (primal, tangent)
        return out[0], out[1]

    def network_parameters(self) -> dict[str, nn.Parameter]:
        """The classifier's own parameters (backbone and head), without those of any weighting module."""
        return {
            f"{part}.{k}": v for part in ("featurizer", "classifier") for k, v in getattr(self, part).named_parameters()
        }

    def detached_weights(self) -> tuple[Params, Params]:
        """(parameters, buffers) of the network as plain tensors: the starting point of a look-ahead."""
        return {k: v.detach() for k, v in self.network_parameters().items()}, dict(self.named_buffers())

    def example_weights(self, batch: NoisyBatch) -> torch.Tensor:
        """[B] the weight this method's update gives each example of the batch, as a multiplier of the mean
        loss (the update minimises mean(w * loss); uniform weighting is all 1)."""
        raise NotImplementedError

    def weighted_step(self, batch: NoisyBatch, weigh: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The real update's loss, mean(w * loss), with w = weigh(per-example losses) held fixed, logged as
        every classifier logs."""
        logits = self(batch.x)
        losses = F.cross_entropy(logits, batch.y, reduction="none")
        with torch.no_grad():
            weights = weigh(losses.detach())
        loss = (weights * losses).mean()
        self.log_step(loss, logits, batch.y)
        return loss

    def configure_optimizers(self):
        params = list(self.network_parameters().values())  # a weighting module has an optimiser of its own
        return torch.optim.Adam(params, lr=self.hp["lr"], weight_decay=self.hp["weight_decay"])
