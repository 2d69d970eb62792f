"""What a search optimises: the few-shot loss of a supernet on a batch of episodes, written as a pure function of
its weights and architecture (torch.func.functional_call), so that DARTS's second-order hypergradient and MAML's
inner loop are ordinary function transforms.

`protonet`: the prototypical loss (Snell et al. 2017) on the network's features. `maml`: a linear head on the
features, all weights adapted to each task's support set by `inner_steps` SGD steps (Finn et al. 2017; the
inner gradients kept in the graph unless `first_order`), the loss on its queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from ..core.errors import BenchError
from ..episodes import Episodes
from ..methods import prototypes
from ..methods.nas_space import CellChoice, SearchSpace, supernet

Params = dict[str, torch.Tensor]
OBJECTIVES = ("protonet", "maml")
OBJECTIVE_HPARAMS: dict[str, dict[str, Any]] = {
    "protonet": {"distance": "euclidean"},  # the project's Omniglot recipe (squared: sqeuclidean)
    "maml": {"inner_steps": 1, "inner_lr": 0.4, "first_order": False},  # MAML's Omniglot 5-way recipe
}


class SearchModel(nn.Module):
    """The supernet and, for MAML, its linear head (one output per way)."""

    def __init__(self, space: SearchSpace, in_channels: int, image_size: int, ways: int):
        super().__init__()
        self.features = supernet(space, in_channels, image_size)
        self.head = nn.Linear(self.features.out_dim, ways)


def _distances(q: torch.Tensor, p: torch.Tensor, squared: bool) -> torch.Tensor:
    # written out rather than torch.cdist, whose backward is not differentiable again (second-order DARTS)
    d2 = (q.unsqueeze(2) - p.unsqueeze(1)).pow(2).sum(-1)
    return d2 if squared else d2.clamp_min(1e-12).sqrt()


class Objective:
    """loss(params, arch, episodes) -> (loss, accuracy); arch is {"weights": w} (mixed) or {"choice": c}."""

    def __init__(self, name: str, model: SearchModel, hp: Mapping[str, Any] | None = None):
        if name not in OBJECTIVES:
            raise BenchError(f"unknown search objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
        self.name, self.model = name, model
        self.hp = {**OBJECTIVE_HPARAMS[name], **(hp or {})}
        if name == "protonet" and self.hp["distance"] not in ("euclidean", "sqeuclidean"):
            raise BenchError(f"distance={self.hp['distance']!r}: choose euclidean or sqeuclidean")

    def params(self) -> Params:
        """The weights this objective trains (ProtoNet has no head)."""
        return {k: v for k, v in self.model.named_parameters() if self.name == "maml" or not k.startswith("head.")}

    def features(self, params: Params, x: torch.Tensor, arch: Mapping[str, Any]) -> torch.Tensor:
        feats = {k[len("features.") :]: v for k, v in params.items() if k.startswith("features.")}
        return functional_call(self.model.features, feats, (x,), dict(arch))

    def __call__(self, params: Params, arch: Mapping[str, Any], ep: Episodes) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.protonet(params, arch, ep) if self.name == "protonet" else self.maml(params, arch, ep)
        loss = F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten())
        acc = (logits.argmax(-1) == ep.query_y).float().mean()
        return loss, acc.detach()

    def protonet(self, params: Params, arch: Mapping[str, Any], ep: Episodes) -> torch.Tensor:
        b, s = ep.support_x.shape[:2]
        x = torch.cat([ep.support_x, ep.query_x], dim=1)
        z = self.features(params, x.flatten(0, 1), arch).view(b, x.shape[1], -1)
        d = _distances(z[:, s:], prototypes(z[:, :s], ep.support_y, ep.ways), self.hp["distance"] == "sqeuclidean")
        return -d

    def maml(self, params: Params, arch: Mapping[str, Any], ep: Episodes) -> torch.Tensor:
        head = self.model.head
        if head.out_features != ep.ways:
            raise BenchError(f"the MAML head has {head.out_features} outputs; these episodes are {ep.ways}-way")

        def logits(p: Params, x: torch.Tensor) -> torch.Tensor:
            return F.linear(self.features(p, x, arch), p["head.weight"], p["head.bias"])

        def support_loss(p: Params, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits(p, sx), sy)

        out = []
        for sx, sy, qx in zip(ep.support_x, ep.support_y, ep.query_x):  # task by task: exact batch statistics
            fast = params
            for _ in range(int(self.hp["inner_steps"])):
                g = grad(support_loss)(fast, sx, sy)
                if self.hp["first_order"]:
                    g = {k: v.detach() for k, v in g.items()}
                fast = {k: fast[k] - self.hp["inner_lr"] * g[k] for k in fast}
            out.append(logits(fast, qx))
        return torch.stack(out)


def mixed(alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """The architecture argument of a DARTS supernet: each edge's operations weighted by softmax(alpha)."""
    return {"weights": alpha.softmax(dim=-1)}


def chosen(choice: CellChoice) -> dict[str, CellChoice]:
    return {"choice": choice}
