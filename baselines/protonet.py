"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Embed support and query images with one network; a class is the mean embedding of its shots;
queries are classified by a softmax over negative squared Euclidean distances to the prototypes.
Trains with Adam, learning rate halved every `lr_step` steps, as in the paper.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.methods import MetaLearner, make_backbone, prototypes, register


@register
class ProtoNet(MetaLearner):
    name = "protonet"
    paper = "Snell et al., Prototypical Networks for Few-shot Learning, NeurIPS 2017"
    HPARAMS = {"lr": 1e-3, "lr_step": 2000, "lr_gamma": 0.5}

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.encoder = make_backbone(self.hp["backbone"], task.channels, task.image_size)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:2]
        return self.encoder(x.flatten(0, 1)).view(*lead, -1)

    def predict(self, support_x, support_y, query_x, ways):
        b, s = support_x.shape[:2]
        # one pass over support and query together keeps batch-norm statistics and launches shared
        z = self.embed(torch.cat([support_x, query_x], dim=1))
        protos = prototypes(z[:, :s], support_y, ways)
        return -torch.cdist(z[:, s:], protos).pow(2)

    def training_step(self, ep, batch_idx):
        logits = self.predict_episodes(ep)
        loss = F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten())
        acc = (logits.argmax(-1) == ep.query_y).float().mean()
        self.log_dict({"loss": loss, "acc": acc}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hp["lr"])
        sched = torch.optim.lr_scheduler.StepLR(opt, self.hp["lr_step"], self.hp["lr_gamma"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
