"""Relation Network (Sung, Yang, Zhang, Xiang, Torr & Hospedales, Learning to Compare, CVPR 2018).

An embedding module maps images to feature maps; a class's feature map is the SUM of its shots' maps
(the paper's choice for K > 1); a learned relation module scores each (class, query) pair from the
channel-wise concatenation of the two maps with a number in [0, 1]; the loss is the mean squared error
between the scores and the one-hot labels. `predict` returns the relation module's pre-sigmoid output
(sigmoid of it is the relation score, so the ranking is the score's).

Architecture (Sec. 3.4 and Fig. 2 of the paper, checked against the authors' code, floodsung/
LearningToCompare_FSL): with `embedding` = "paper" (default) the embedding module is the paper's own:
four blocks of 3x3 convolution with `filters` (64) channels, batch norm and ReLU, the first two also
2x2 max-pooled and unpadded, the last two padded and not pooled; at 28x28 it gives a 64x5x5 map (28 ->
26 -> 13 -> 11 -> 5 -> 5 -> 5), at 84x84 64x19x19. It takes no backbone: it needs backbone=conv4 (the
default, the same four 64-filter conv blocks) and the record's backbone reads conv4. The relation module:
two blocks of 3x3 convolution (64 filters), batch norm, ReLU and 2x2 max-pool, then a fully connected
layer of 8 units with ReLU and one with a sigmoid. Its convolutions are padded when the feature map is
under 10 pixels a side (Omniglot's 5x5 -> 2 -> 1, so 64 inputs to the 8-unit layer, as the paper's H = 64)
and unpadded otherwise (mini-ImageNet's 19x19 -> 8 -> 3, H = 576), the rule of the authors' code as
generalised by Chen et al. 2019 (CloserLookFewShot); a pool that would empty a 1-pixel map is skipped.
Weights start as in the authors' code (conv N(0, 2 / (9 * out channels)), linear N(0, 0.01) with bias 1).

With `embedding` = "backbone" the features come from the registered `backbone` as flat vectors, which
cannot be split back into a map; the relation module is then an MLP on the concatenated vectors (a layer
of `filters` units standing in for the two conv blocks, then the paper's 8-unit layer and the score),
initialised as torch does (three stacked 0.01-scale layers, the authors' init, left it at chance).

Training as in the paper and the authors' code: Adam at 1e-3, halved every 100,000 episodes, the
gradient norm of each module clipped at 0.5 (code only). Batch norm: the authors' code uses momentum 1
and train-mode statistics at test time; here the usual running statistics (eval mode), so a test
episode's scores do not depend on the other episodes of its batch or on its other queries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods import HParamError, MetaLearner, PaperResult, Recipe, make_backbone, register

_S = "Sung et al. 2018"
_CODE = "the authors' code (floodsung/LearningToCompare_FSL)"
_OMNI = (
    f"Queries per class in training episodes as the paper (Sec. 4.1) and {_CODE}. The paper trained for 1,000,000 "
    "episodes (its step decay halves the rate every 100,000); here the protocol's budget. The paper augments "
    "Omniglot with rotations, which this protocol holds as extra classes."
)
_MINI = (
    f"Queries per class in training episodes as the paper (Sec. 4.2) and {_CODE}. The paper trained for 500,000 "
    "episodes; here the protocol's budget."
)


def _block(cin: int, cout: int, padding: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=padding), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


class PaperEmbedding(nn.Module):
    """The paper's embedding module: images [N, C, H, W] -> feature maps [N, filters, h, w]."""

    def __init__(self, in_channels: int, image_size: int, filters: int):
        super().__init__()
        self.net = nn.Sequential(
            _block(in_channels, filters, 0, True),
            _block(filters, filters, 0, True),
            _block(filters, filters, 1, False),
            _block(filters, filters, 1, False),
        )
        self.side = ((image_size - 2) // 2 - 2) // 2
        if self.side < 1:
            raise ValueError(f"relation: a {image_size}px image is too small for the paper's embedding (10px at least)")
        self.out_shape = (filters, self.side, self.side)

    def forward(self, x):
        return self.net(x)


class ConvRelation(nn.Module):
    """The paper's relation module on concatenated maps [P, 2C, h, w] -> pre-sigmoid scores [P]."""

    def __init__(self, channels: int, side: int, filters: int, hidden: int):
        super().__init__()
        padding = 1 if side < 10 else 0
        blocks, cin = [], 2 * channels
        for _ in range(2):
            side = side + 2 * padding - 2
            blocks.append(_block(cin, filters, padding, pool=side >= 2))
            side = side // 2 if side >= 2 else side
            cin = filters
        if side < 1:
            raise ValueError("relation: the feature map is too small for the relation module")
        self.convs = nn.Sequential(*blocks)
        self.fc = nn.Sequential(nn.Linear(filters * side * side, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, pairs):
        return self.fc(self.convs(pairs).flatten(1)).squeeze(-1)


class MLPRelation(nn.Module):
    """Relation module for flat features [P, 2D] -> pre-sigmoid scores [P]."""

    def __init__(self, dim: int, filters: int, hidden: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(2 * dim, filters), nn.ReLU(), nn.Linear(filters, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, pairs):
        return self.fc(pairs).squeeze(-1)


def _authors_init(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.01)
        nn.init.ones_(m.bias)


@register
class RelationNet(MetaLearner):
    name = "relation"
    paper = "Sung et al., Learning to Compare: Relation Network for Few-Shot Learning, CVPR 2018"
    HPARAMS = {
        "lr": 1e-3,
        "lr_step": 100000,
        "lr_gamma": 0.5,
        "grad_clip": 0.5,  # per module (embedding, relation); 0: none
        "embedding": "paper",  # the paper's embedding module; "backbone": `backbone`'s flat features
        "filters": 64,  # channels of the paper's embedding and relation modules (units of the MLP's first layer)
        "relation_dim": 8,  # units of the relation module's hidden fully connected layer
        "eval_batch": 5,  # every (class, query) pair goes through the relation module: memory grows fast
    }
    HPARAM_BOUNDS = {
        "lr_step": (1, None),
        "lr_gamma": (0, 1),
        "grad_clip": (0, None),
        "filters": (1, None),
        "relation_dim": (1, None),
    }
    RECIPES = (
        Recipe("omniglot", {"train_queries": 19}, ways=5, shots=1, source=f"{_S}, Sec. 4.1", note=_OMNI),
        Recipe("omniglot", {"train_queries": 15}, ways=5, shots=5, source=f"{_S}, Sec. 4.1", note=_OMNI),
        Recipe("omniglot", {"train_queries": 10}, ways=20, shots=1, source=f"{_S}, Sec. 4.1", note=_OMNI),
        Recipe("omniglot", {"train_queries": 5}, ways=20, shots=5, source=f"{_S}, Sec. 4.1", note=_OMNI),
        Recipe("mini-imagenet", {"train_queries": 15}, shots=1, source=f"{_S}, Sec. 4.2", note=_MINI),
        Recipe("mini-imagenet", {"train_queries": 10}, shots=5, source=f"{_S}, Sec. 4.2", note=_MINI),
    )
    PAPER_RESULTS = {
        "omniglot-5w1s": PaperResult(99.6, 0.2, f"{_S}, Table 1", "1,000 test episodes"),
        "omniglot-5w5s": PaperResult(99.8, 0.1, f"{_S}, Table 1", "1,000 test episodes"),
        "omniglot-20w1s": PaperResult(97.6, 0.2, f"{_S}, Table 1", "1,000 test episodes"),
        "omniglot-20w5s": PaperResult(99.1, 0.1, f"{_S}, Table 1", "1,000 test episodes"),
        "mini-imagenet-5w1s": PaperResult(50.44, 0.82, f"{_S}, Table 2", "600 test episodes"),
        "mini-imagenet-5w5s": PaperResult(65.32, 0.70, f"{_S}, Table 2", "600 test episodes"),
    }

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if hp["embedding"] not in ("paper", "backbone"):
            raise HParamError(f"relation: embedding={hp['embedding']!r} is not one of paper, backbone")
        if hp["embedding"] == "paper" and hp["backbone"] != "conv4":
            raise HParamError(
                f"relation: embedding=paper is the paper's own module and takes no backbone (backbone=conv4, the "
                f"default); to use backbone={hp['backbone']} set embedding=backbone"
            )
        return hp

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        filters, hidden = self.hp["filters"], self.hp["relation_dim"]
        self.encoder: nn.Module
        self.relation: nn.Module
        if self.hp["embedding"] == "paper":
            self.encoder = PaperEmbedding(task.channels, task.image_size, filters)
            self.relation = ConvRelation(filters, self.encoder.side, filters, hidden)
        else:
            self.encoder = make_backbone(self.hp["backbone"], task.channels, task.image_size)
            self.relation = MLPRelation(int(self.encoder.out_dim), filters, hidden)
        if self.hp["embedding"] == "paper":  # the MLP keeps torch's initialisation: three 0.01-scale layers stall
            self.apply(_authors_init)

    def predict(self, support_x, support_y, query_x, ways):
        b, s, q = support_x.shape[0], support_x.shape[1], query_x.shape[1]
        # one pass: in training, batch norm normalises support and query with the same statistics
        z = self.encoder(torch.cat([support_x, query_x], dim=1).flatten(0, 1))
        shape = z.shape[1:]
        z = z.reshape(b, s + q, -1)
        onehot = F.one_hot(support_y, ways).to(z.dtype)  # [B, S, N]
        classes = onehot.transpose(1, 2) @ z[:, :s]  # [B, N, D]: the SUM of each class's shots
        queries = z[:, s:]
        pairs = torch.cat(
            [classes.unsqueeze(1).expand(b, q, ways, -1), queries.unsqueeze(2).expand(b, q, ways, -1)], dim=-1
        )  # [B, Q, N, 2D]: (class, query) as in the authors' code
        pairs = pairs.reshape(b * q * ways, 2, *shape).flatten(1, 2)  # maps: channels concatenated
        return self.relation(pairs).view(b, q, ways)

    def training_step(self, ep, batch_idx):
        logits = self.predict_episodes(ep)
        target = F.one_hot(ep.query_y, ep.ways).to(logits.dtype)
        loss = F.mse_loss(torch.sigmoid(logits), target)
        acc = (logits.argmax(-1) == ep.query_y).float().mean()
        self.log_dict({"loss": loss, "acc": acc}, prog_bar=True, on_step=True)
        return loss

    def on_before_optimizer_step(self, optimizer):
        if self.hp["grad_clip"] > 0:  # the authors' code clips each module's gradient norm at 0.5
            for module in (self.encoder, self.relation):
                torch.nn.utils.clip_grad_norm_(module.parameters(), self.hp["grad_clip"])

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hp["lr"])
        sched = torch.optim.lr_scheduler.StepLR(opt, self.hp["lr_step"], self.hp["lr_gamma"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
