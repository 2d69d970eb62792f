"""SimpleShot (Wang, Chao, Weinberger & van der Maaten, arXiv:1911.04623, 2019): no meta-learning.

Train the backbone as an ordinary classifier over every meta-training class with cross-entropy, drop
the classifier, and label a test episode's queries by the nearest class centroid of the support features
after CL2N: centre each feature on the mean feature of the training data, then L2-normalise.

The training feature mean is tracked during training as an exponential moving average of the batch
features (`mean_momentum`) and saved with the weights, so an episode's answer depends only on the
checkpoint. The paper computes it once over the training set after training; with the default momentum
the average spans the last few hundred batches, tens of thousands of images.

The paper's recipe (mini-ImageNet, tiered-ImageNet and iNat; its reference configuration): SGD with
momentum 0.9, learning rate 0.1 divided by 10 at half and three quarters of training, weight decay 1e-4,
batch 256, 90 epochs. The paper published no Omniglot number; the target here is ProtoNet's.
`examples/simpleshot.py` is the same idea written as a `bench submit` walkthrough.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods import HParamError, MetaLearner, Recipe, make_backbone, prototypes, register

_SOURCE = "Wang et al. 2019, Sec. 4, and the reference configuration (configs/mini/softmax/conv4.config)"


@register
class SimpleShot(MetaLearner):
    name = "simpleshot"
    paper = "Wang et al., SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot Learning, 2019"
    training_data = "batches"
    train_mean: torch.Tensor  # a buffer: saved with the weights, never trained
    HPARAMS = {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "batch_size": 256,
        "centre": "train",  # "train": the paper's CL2N; "support": the episode's own support mean; "none": L2N
        "mean_momentum": 0.01,
    }
    HPARAM_BOUNDS = {"momentum": (0, 1), "weight_decay": (0, None), "batch_size": (2, None), "mean_momentum": (0, 1)}
    RECIPES = (
        Recipe(
            "omniglot",
            {},
            source=_SOURCE,
            note="The paper's mini-ImageNet recipe, unchanged (it published no Omniglot set-up): SGD, momentum 0.9, "
            "lr 0.1 divided by 10 at 50% and 75% of the step budget, weight decay 1e-4, batch 256. No training "
            "augmentation (the paper's random crops and flips suit natural images, not characters).",
        ),
        Recipe(
            "mini-imagenet",
            {},
            source=_SOURCE,
            note="90 epochs in the paper; here the protocol's step budget, with the learning-rate drops at the "
            "same fractions of it. No training augmentation.",
        ),
    )

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.encoder = make_backbone(self.hp["backbone"], task.channels, task.image_size)
        self.classifier = nn.Linear(self.encoder.out_dim, task.n_train_classes)
        self.register_buffer("train_mean", torch.zeros(self.encoder.out_dim))

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if hp["centre"] not in ("train", "support", "none"):
            raise HParamError(f"simpleshot: centre={hp['centre']!r} is not one of train, support, none")
        return hp

    def training_step(self, batch, batch_idx):
        x, y = batch
        z = self.encoder(x)
        logits = self.classifier(z)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            self.train_mean.lerp_(z.mean(0), self.hp["mean_momentum"] if self.global_step else 1.0)
        self.log_dict({"loss": loss, "acc": (logits.argmax(-1) == y).float().mean()}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(
            self.parameters(), lr=self.hp["lr"], momentum=self.hp["momentum"], weight_decay=self.hp["weight_decay"]
        )
        trainer = getattr(self, "_trainer", None)  # the drops come at fractions of the step budget
        total = max(1, int(trainer.max_steps)) if trainer is not None else 1
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [total // 2, (3 * total) // 4], gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def features(self, x: torch.Tensor, support: int) -> torch.Tensor:
        """CL2N features of [B, M, C, H, W] images whose first `support` rows are the support set."""
        b = x.shape[0]
        z = self.encoder(x.flatten(0, 1)).view(b, -1, self.encoder.out_dim)
        if self.hp["centre"] == "train":
            z = z - self.train_mean
        elif self.hp["centre"] == "support":
            z = z - z[:, :support].mean(1, keepdim=True)
        return F.normalize(z, dim=-1)

    def predict(self, support_x, support_y, query_x, ways):
        s = support_x.shape[1]
        z = self.features(torch.cat([support_x, query_x], 1), s)
        return -torch.cdist(z[:, s:], prototypes(z[:, :s], support_y, ways))
