"""ANML, A Neuromodulated Meta-Learning algorithm (Beaulieu et al., "Learning to Continually Learn", ECAI 2020).

Two networks read the same image. A neuromodulatory network (NM: a convolutional network, then a linear
layer and a sigmoid) outputs a gate, multiplied elementwise into the prediction network's (PLN's) features
before its output layer; by gating the forward pass it also gates which PLN weights a gradient reaches.
Meta-training (metacontinual.py) is OML's: the output rows of the trajectory's class are re-initialised,
the whole PLN (convolutions and output layer) takes one SGD step per inner image at `inner_lr` with the NM
fixed, and the outer loss on the inner images and a remember batch, at the adapted weights, updates the NM
and the PLN's initial weights with Adam, second order. At test the NM stays fixed and the PLN is
fine-tuned, one SGD step per image at `online_lr`; the output layer (background classes in meta-training,
continual classes at test) starts from the reset, as the reference's evaluation resets it.

Normalisation is per image, everywhere: the reference runs its batch norm on one image at a time, in
training and at test, so the PLN and NM are built on `BatchStatNorm2d` and each image is normalised by its
own statistics (a batch of test images is scored as the same images one by one).

What differs from the paper and its code, and why:
- Networks: Conv-4 (64 filters, a 64-d feature at 28x28) for both the PLN and the NM, and a linear layer
  from the NM's feature to a gate per PLN feature, instead of three 3x3 convolutions of 256 (PLN) and 112
  (NM) channels on 3-channel 28x28 images with a 2304-d gated feature: the CPU budget, and the same
  backbone family as every other method here.
- Second order: the reference's inner gradients are constants (`torch.autograd.grad` without
  `create_graph`); here the meta-gradient is exact (`first_order=true`: the reference's).
- Trajectories: 1 class x 20 inner images and a remember batch of 64, as the reference; the outer images
  include the inner ones (the reference draws the class's 20 images again).
- At test the reference swept Adam's step size (1e-3 to 1e-5) per number of classes; here plain SGD at
  `online_lr`, by default the inner step size the networks were meta-learned for.
- New output units start at zero (`reset=zero`); `reset=kaiming` is the reference's He-normal reset.

The paper's stream numbers (re-runs of the official code) are in `STREAM_CURVE`; the 600-class point is the
paper result for omniglot-oml-stream.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.methods import HParamError, PaperResult, Recipe, make_backbone, register, statistics_from

from .gradient import probe_backbone
from .metacontinual import MetaContinualLearner, as_percent

# classes learned -> test accuracy (fraction), re-runs of the official code
STREAM_CURVE = {10: 0.84, 50: 0.84, 100: 0.81, 200: 0.77, 600: 0.64}
_SOURCE = "Beaulieu et al. 2020, a re-run of the official code (test accuracy after 600 classes)"
_NOTE = (
    "256/112-channel three-layer PLN/NM against Conv-4 here; Adam at a swept step size at test; "
    "after 10/50/100/200 classes: 84/84/81/77%"
)


@register
class ANML(MetaContinualLearner):
    name = "anml"
    paper = "Beaulieu et al., Learning to Continually Learn, ECAI 2020"
    PLN_BODY = ("features",)
    HPARAMS = {
        **MetaContinualLearner.HPARAMS,
        "lr": 1e-3,  # meta-learning rate (the README's meta_lr)
        "inner_lr": 0.1,  # the README's update_lr
        "online_lr": 0.1,
    }
    RECIPES = (
        Recipe(
            "omniglot-oml",
            {},
            source="Beaulieu et al. 2020, Sec. 3 and the official code (README command)",
            note="Conv-4 PLN and NM at 28x28 grey for the paper's 256/112-channel three-layer networks on "
            "3-channel images (CPU budget); second order; SGD at the inner step size online (the code swept "
            "Adam's step size)",
        ),
    )
    PAPER_RESULTS = {
        "omniglot-oml-stream": PaperResult(100 * STREAM_CURVE[600], None, _SOURCE, _NOTE, as_percent(STREAM_CURVE))
    }

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        foreign = probe_backbone(hp["backbone"])[1]
        if foreign:
            raise HParamError(
                f"anml: backbone={hp['backbone']} has {foreign} layers, which cannot normalise each image by "
                "its own statistics (ANML's normalisation); use a backbone built on BatchStatNorm2d "
                "(conv4, resnet12)"
            )
        return hp

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        build = lambda: make_backbone(self.hp["backbone"], task.channels, task.image_size, running_stats=False)
        self.features = build()  # the PLN's body, replacing the contract's (it keeps running statistics)
        self.nm = build()
        self.gate = nn.Linear(self.nm.out_dim, self.features.out_dim)

    def per_image(self, name: str, fast, x: torch.Tensor) -> torch.Tensor:
        """Submodule `name` with each image normalised by its own statistics."""
        with statistics_from(self.get_submodule(name), groups=len(x)):
            return self.run(name, fast, x)

    def embed(self, x):
        return x, torch.sigmoid(self.gate(self.per_image("nm", {}, x)))

    def pln_logits(self, fast, h, continual):
        x, mask = h
        return self.run(self.output_name(continual), fast, self.per_image("features", fast, x) * mask)
