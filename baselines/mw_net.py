"""Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting (Shu, Xie, Yi, Zhao, Zhou, Xu & Meng,
NeurIPS 2019).

A 1-100-1 MLP V(ℓ; φ) (ReLU, sigmoid output) maps an example's training loss to its weight. Each step (the
paper's Algorithm 1):

1. look-ahead: θ̂(φ) = θ − α ∇θ (1/B) Σᵢ V(ℓᵢ(θ); φ) ℓᵢ(θ), the loss fed to V as a value (no gradient
   flows through V's input);
2. meta-step: φ ← Adam(φ, ∇φ L_meta(θ̂(φ))) on a clean meta batch;
3. real step: θ ← θ − Adam((1/B) Σᵢ V(ℓᵢ(θ); φ) ℓᵢ(θ)) with the new φ, the weights held fixed.

∇φ comes from `torch.func` without differentiating through the look-ahead's gradient: θ̂ depends on φ only
through the weights, so ∇φ L_meta(θ̂) = −α/B Σᵢ (∇ℓᵢ(θ) · ∇L_meta(θ̂)) ∇φ V(ℓᵢ; φ), with the look-ahead's
gradient (`grad`), the meta gradient at θ̂ (`grad`), every example's gradient dotted with it in one
forward-mode pass (`jvp`) and V's gradient (`grad`): exact, at about half the cost of the double
back-propagation (the tests check it against finite differences of the look-ahead meta loss itself).
V's optimiser is the paper's (Adam, 1e-3, weight decay 1e-4) and is stepped inside the training step, between
the look-ahead and the real update, so that Lightning counts one step per training step. As in the authors'
code the weights are not normalised over the batch (under Adam their common scale does not matter, only how
they differ); `example_weights` gives V(ℓᵢ) itself, and the record divides it by its batch's mean.

What differs from the paper: conv4-lite at 84px from scratch, Adam at 1e-3 for the classifier (the shared recipe of
the noisy-label protocols, benchmark.methods.noisy) instead of SGD at 0.1 on a WRN-28-10 / ResNet-32, so the
look-ahead step α is a hyper-parameter (0.1, the paper's learning rate) rather than the optimiser's; batch
norm uses the batch's own statistics in the look-ahead.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad

from benchmark.methods import NoisyBatch, NoisyLearner, batch_statistics, cifar_anchors, register

Params = dict[str, torch.Tensor]


class WeightNet(nn.Module):
    """V(ℓ; φ): a loss [B] -> a weight in (0, 1) [B]."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.net(losses.unsqueeze(-1)).squeeze(-1)


@register
class MWNet(NoisyLearner):
    name = "mw-net"
    paper = "Shu et al., Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting, NeurIPS 2019"
    HPARAMS = {
        **NoisyLearner.HPARAMS,
        "lookahead_lr": 0.1,
        "vnet_hidden": 100,
        "vnet_lr": 1e-3,
        "vnet_weight_decay": 1e-4,
    }
    HPARAM_BOUNDS = {**NoisyLearner.HPARAM_BOUNDS, "vnet_hidden": (1, None), "vnet_weight_decay": (0, None)}
    PAPER_RESULTS = cifar_anchors(90.46, 86.53, 82.98)

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.weighting = WeightNet(int(self.hp["vnet_hidden"]))
        self.vnet_optimizer: torch.optim.Optimizer | None = None  # made on the first step, on the training device

    def weighting_gradient(self, batch: NoisyBatch) -> Params:
        """∇φ L_meta(θ̂(φ)) at the current φ, θ̂(φ) = θ − α ∇θ (1/B) Σᵢ V(ℓᵢ; φ) ℓᵢ(θ)."""
        params, buffers = self.detached_weights()
        vparams = {k: v.detach() for k, v in self.weighting.named_parameters()}
        lr = self.hp["lookahead_lr"]

        def weighted(p: Params) -> torch.Tensor:
            losses = self.losses(p, buffers, batch.x, batch.y)
            return (functional_call(self.weighting, vparams, (losses.detach(),)) * losses).mean()

        with batch_statistics(self):
            step = grad(weighted)(params)
            ahead = {k: v - lr * step[k] for k, v in params.items()}
            direction = self.meta_direction(ahead, buffers, batch)  # ∇L_meta at θ̂
            losses, dots = self.directional_losses(params, buffers, batch, direction)  # ∇ℓᵢ(θ) · ∇L_meta(θ̂)
        # θ̂ depends on φ only through the weights: ∂L_meta(θ̂)/∂φ = −α/B Σᵢ (∇ℓᵢ · ∇L_meta(θ̂)) ∂V(ℓᵢ; φ)/∂φ
        scale = -lr / len(losses)
        return grad(lambda vp: scale * (dots * functional_call(self.weighting, vp, (losses,))).sum())(vparams)

    def example_weights(self, batch: NoisyBatch) -> torch.Tensor:
        with torch.no_grad(), batch_statistics(self):
            return self.weighting(self.losses(*self.detached_weights(), batch.x, batch.y))

    def training_step(self, batch, batch_idx):
        if self.vnet_optimizer is None:
            self.vnet_optimizer = torch.optim.Adam(
                self.weighting.parameters(), lr=self.hp["vnet_lr"], weight_decay=self.hp["vnet_weight_decay"]
            )
        g = self.weighting_gradient(batch)
        for k, p in self.weighting.named_parameters():
            p.grad = g[k]
        self.vnet_optimizer.step()
        self.vnet_optimizer.zero_grad()
        return self.weighted_step(batch, self.weighting)  # the real step, with the updated V
