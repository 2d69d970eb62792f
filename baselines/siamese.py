"""Siamese networks for one-shot recognition (Koch, Zemel & Salakhutdinov, ICML Deep Learning Workshop 2015).

A twin network embeds two images with shared weights; the pair's similarity is a sigmoid of a learned,
weighted L1 distance between the embeddings, p(x1, x2) = sigmoid(sum_d w_d |f(x1)_d - f(x2)_d| + b),
trained with binary cross-entropy on same/different pairs. A test query takes the class whose support
images it is most similar to (the mean similarity over a class's K shots when K > 1), with no fine-tuning.

Pairs come from training episodes: every (query, support) pair of an episode, same class or not. An N-way
episode has N - 1 different pairs for each same pair; the positive pairs are weighted N - 1 so the loss
sees both kinds equally, as the paper's balanced pair sets do.

Differs from the paper: the embedding is the benchmark's backbone (Conv-4 on 28px Omniglot), not the
paper's four-layer network with a 4096-unit sigmoid layer on 105px images; Adam replaces the paper's
per-layer SGD rates and momentum schedule; no affine distortions of the training pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods import MetaLearner, PaperResult, Recipe, make_backbone, register

_VINYALS = "Vinyals et al. 2016, Matching Networks, Table 1 (their Siamese network, no fine-tuning)"
_NOTE = "a later paper's run of the method on the Vinyals split; Koch et al. report 20-way within-alphabet tasks"


@register
class Siamese(MetaLearner):
    name = "siamese"
    paper = "Koch et al., Siamese Neural Networks for One-shot Image Recognition, ICML DL Workshop 2015"
    HPARAMS = {"lr": 1e-3, "lr_step": 2000, "lr_gamma": 0.5, "meta_batch": 4}
    RECIPES = (
        Recipe(
            "omniglot",
            {},
            source="Koch et al. 2015, Sec. 3 and 4",
            note="Pairs from training episodes with the test ways and shots, positives weighted ways - 1 (the paper "
            "balances same and different pairs). Adam at 1e-3 halved every 2,000 steps instead of the paper's "
            "per-layer SGD with momentum; the backbone (Conv-4, 28px) instead of the paper's 105px network; no "
            "affine distortions. The paper trained on 30 alphabets with up to 150,000 pairs per distortion "
            "setting; here the protocol's training classes and step budget.",
        ),
    )
    PAPER_RESULTS = {
        "omniglot-5w1s": PaperResult(96.7, None, _VINYALS, _NOTE),
        "omniglot-5w5s": PaperResult(98.4, None, _VINYALS, _NOTE),
        "omniglot-20w1s": PaperResult(88.0, None, _VINYALS, _NOTE),
        "omniglot-20w5s": PaperResult(96.5, None, _VINYALS, _NOTE),
    }

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.encoder = make_backbone(self.hp["backbone"], task.channels, task.image_size)
        self.distance = nn.Linear(self.encoder.out_dim, 1)  # the weighted L1 distance: w . |f1 - f2| + b

    def pair_logits(self, support_x, query_x) -> torch.Tensor:
        """Similarity logits of every (query, support image) pair: [B, Q, S]."""
        b, s = support_x.shape[:2]
        z = self.encoder(torch.cat([support_x, query_x], 1).flatten(0, 1)).view(b, -1, self.encoder.out_dim)
        zs, zq = z[:, :s], z[:, s:]
        return self.distance((zq.unsqueeze(2) - zs.unsqueeze(1)).abs()).squeeze(-1)

    @staticmethod
    def class_scores(pair_logits, support_y, ways):
        sim = torch.sigmoid(pair_logits)  # [B, Q, S]
        onehot = F.one_hot(support_y, ways).to(sim.dtype)  # [B, S, N]
        mean_sim = sim @ onehot / onehot.sum(1, keepdim=True)  # a class's mean similarity over its shots
        return mean_sim.clamp_min(1e-12).log()

    def predict(self, support_x, support_y, query_x, ways):
        return self.class_scores(self.pair_logits(support_x, query_x), support_y, ways)

    def training_step(self, ep, batch_idx):
        logits = self.pair_logits(ep.support_x, ep.query_x)
        same = (ep.query_y.unsqueeze(2) == ep.support_y.unsqueeze(1)).to(logits.dtype)
        pos_weight = torch.tensor(float(ep.ways - 1), dtype=logits.dtype, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, same, pos_weight=pos_weight)
        with torch.no_grad():
            acc = (self.class_scores(logits, ep.support_y, ep.ways).argmax(-1) == ep.query_y).float()
        self.log_dict({"loss": loss, "acc": acc.mean()}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hp["lr"])
        sched = torch.optim.lr_scheduler.StepLR(opt, self.hp["lr_step"], self.hp["lr_gamma"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
