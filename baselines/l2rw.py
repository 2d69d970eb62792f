"""Learning to Reweight Examples for Robust Deep Learning (Ren, Zeng, Yang & Urtasun, ICML 2018).

Each step weighs the training batch's examples by how much up-weighting each would lower the loss on a clean
meta batch after one SGD step (the paper's Algorithm 1):

    θ̂(ε) = θ − α ∇θ Σᵢ εᵢ ℓᵢ(θ),    gᵢ = ∂/∂εᵢ L_meta(θ̂(ε)) at ε = 0,
    w̃ᵢ = max(−gᵢ, 0),    wᵢ = w̃ᵢ / Σⱼ w̃ⱼ  (all 0 when every w̃ is 0: the step changes nothing),

then takes the real step on Σᵢ wᵢ ℓᵢ(θ). At ε = 0 the look-ahead is θ itself, so gᵢ = −α ∇L_meta(θ) · ∇ℓᵢ(θ)
exactly: g comes from `torch.func`, one reverse pass for the meta gradient (`grad`) and one forward-mode pass of
the training losses along it (`jvp`), instead of the paper's double back-propagation through the look-ahead
(the same numbers at about half the cost; the tests check g against finite differences of the look-ahead
meta loss itself). α only scales g, and the normalisation cancels it.

What differs from the paper: conv4-lite at 84px from scratch with Adam (the shared recipe of the
noisy-label protocols, benchmark.methods.noisy) instead of a WRN-28-10 with SGD; batch norm uses the batch's
own statistics in the meta passes (they leave the running statistics alone). `example_weights` gives B·wᵢ (a
multiplier of the batch's mean loss: uniform weighting is 1).
"""

from __future__ import annotations

import torch

from benchmark.methods import NoisyBatch, NoisyLearner, batch_statistics, cifar_anchors, register


@register
class L2RW(NoisyLearner):
    name = "l2rw"
    paper = "Ren, Zeng, Yang & Urtasun, Learning to Reweight Examples for Robust Deep Learning, ICML 2018"
    HPARAMS = {**NoisyLearner.HPARAMS, "lookahead_lr": 0.1}
    PAPER_RESULTS = cifar_anchors(89.45, 87.18, 81.57)

    def epsilon_gradient(self, batch: NoisyBatch) -> torch.Tensor:
        """g = ∂ L_meta(θ − α ∇θ Σ εᵢ ℓᵢ(θ)) / ∂ε at ε = 0, one entry per training example [B]."""
        params, buffers = self.detached_weights()
        with batch_statistics(self):
            direction = self.meta_direction(params, buffers, batch)
            _, dots = self.directional_losses(params, buffers, batch, direction)
        return -self.hp["lookahead_lr"] * dots

    def example_weights(self, batch: NoisyBatch) -> torch.Tensor:
        w = torch.clamp(-self.epsilon_gradient(batch), min=0)
        total = w.sum()
        return w * (len(w) / total) if total > 0 else w

    def training_step(self, batch, batch_idx):
        weights = self.example_weights(batch)
        return self.weighted_step(batch, lambda _losses: weights)
