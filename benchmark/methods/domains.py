"""The contract of methods for classification across domains (the domain-generalisation setting).

A `DomainLearner` is a classifier over a fixed set of classes: a backbone (`featurizer`) and a linear
head. It trains on batches drawn from every source domain at once, `(xs, ys)` with xs [D, B, C, H, W]
(B images of each of D domains, normalised and augmented by the harness, identically for every method)
and ys [D, B] class ids, and is scored image by image on a domain it never saw with `classify(x)`.
Only the training step differs between methods (ERM pools the domains; MLDG simulates the domain shift),
so everything else lives here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..protocols import Protocol
from .backbones import make_backbone
from .contract import MetaLearner

EPISODIC_ONLY = ("train_ways", "train_shots", "train_queries", "meta_batch")


class DomainLearner(MetaLearner):
    training_data: ClassVar[str] = "domains"
    # DomainBed's batch of 32 images per domain; Adam at 1e-3 since the backbone trains from scratch here
    # (DomainBed fine-tunes an ImageNet-pretrained ResNet-50 at 5e-5); eval_batch counts images
    HPARAMS: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 32, "eval_batch": 256}
    HPARAM_BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "batch_size": (1, None),
        "weight_decay": (0, None),
    }

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.featurizer = make_backbone(self.hp["backbone"], task.channels, task.image_size)
        self.classifier: nn.Module = nn.Linear(self.featurizer.out_dim, task.ways)  # MLDG drops it for episodes

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        # the episode-shape and meta-batch settings every episodic method has mean nothing to a classifier
        return {k: v for k, v in super().defaults().items() if k not in EPISODIC_ONLY}

    @classmethod
    def supports(cls, protocol: Protocol) -> str | None:
        if protocol.episode is not None:
            return (
                f"{cls.name} is a classifier over a fixed set of classes and {protocol.name} is episodic "
                f"(new classes in every episode); it runs the classification protocols of domain generalisation. "
                f"On the episodic ones the episodic learners (protonet, maml, finetune, ...), trained on the pooled "
                f"source domains, are the ERM reference"
            )
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.featurizer(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [n, classes] for images [n, C, H, W]: what scoring calls, in eval mode."""
        return self(x)

    def predict(self, support_x, support_y, query_x, ways):
        raise TypeError(f"{self.name} classifies images (classify); it does not answer episodes")

    @staticmethod
    def pooled_loss(logits: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, ys.reshape(-1))

    def log_step(self, loss: torch.Tensor, logits: torch.Tensor, ys: torch.Tensor) -> None:
        acc = (logits.argmax(-1) == ys.reshape(-1)).float().mean()
        self.log_dict({"loss": loss.detach(), "acc": acc}, prog_bar=True, on_step=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hp["lr"], weight_decay=self.hp["weight_decay"])
