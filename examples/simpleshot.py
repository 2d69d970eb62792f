"""SimpleShot: nearest-centroid few-shot classification on pre-trained features.

Wang, Chao, Weinberger & van der Maaten, "SimpleShot: Revisiting Nearest-Neighbor Classification
for Few-Shot Learning", arXiv:1911.04623, 2019.

No meta-learning at all: train a backbone as an ordinary classifier over every meta-training class,
throw the classifier away, and classify a test episode's queries by their distance to the class
centroids of the support features after "CL2N" feature transformation: centre (subtract the mean
feature of the training data), then L2-normalise. The paper shows this simple recipe is on par with
many meta-learning methods.

Submit it with `bench submit examples/simpleshot.py --protocols omniglot-5w1s` (see examples/README.md).
It is the submission walkthrough, so it takes its own name (`my-simpleshot`): the built-in `simpleshot`
(baselines/simpleshot.py) is the paper's recipe, and a submission may not take a built-in's name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.algorithms import MetaLearner, prototypes
from benchmark.backbones import make_backbone


class SimpleShot(MetaLearner):
    name = "my-simpleshot"
    paper = "Wang et al., SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot Learning, 2019"
    training_data = "batches"  # (images, class ids) over all meta-training classes
    HPARAMS = {
        "lr": 1e-3,             # Adam: robust for the short budgets of a benchmark run (the paper used SGD)
        "batch_size": 128,
        "centre": "train",      # "train": subtract the training feature mean (the paper's CL2N); "support"
        "mean_momentum": 0.01,  # the training feature mean is a running average over training batches
    }

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        if self.hp["centre"] not in ("train", "support"):
            raise ValueError(f"centre must be 'train' or 'support', not {self.hp['centre']!r}")
        self.encoder = make_backbone(self.hp["backbone"], task.channels, task.image_size)
        self.classifier = nn.Linear(self.encoder.out_dim, task.n_train_classes)
        # a buffer, not a parameter: saved in the checkpoint (so `bench verify` reproduces the centring)
        # but never trained
        self.register_buffer("train_mean", torch.zeros(self.encoder.out_dim))

    def training_step(self, batch, batch_idx):
        x, y = batch
        z = self.encoder(x)
        logits = self.classifier(z)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():  # track the mean training feature as the backbone evolves
            self.train_mean.lerp_(z.mean(0), self.hp["mean_momentum"] if batch_idx else 1.0)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({"loss": loss, "acc": acc}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hp["lr"])

    def predict(self, support_x, support_y, query_x, ways):
        b, s = support_x.shape[:2]
        # one encoder pass for support and query; in eval mode batch norm uses its running statistics,
        # so an episode's answer does not depend on which other episodes share the batch
        z = self.encoder(torch.cat([support_x, query_x], 1).flatten(0, 1)).view(b, -1, self.encoder.out_dim)
        if self.hp["centre"] == "train":
            z = z - self.train_mean
        else:  # no training statistics needed: centre each episode on its own support mean
            z = z - z[:, :s].mean(1, keepdim=True)
        z = F.normalize(z, dim=-1)  # L2N: distances then compare directions, not feature magnitudes
        centroids = prototypes(z[:, :s], support_y, ways)                # [B, N, D]
        return -torch.cdist(z[:, s:], centroids)                          # nearest centroid = largest logit
