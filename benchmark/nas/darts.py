"""DARTS (Liu, Simonyan & Yang, ICLR 2019): architecture weights alpha relax the choice of operation on every edge
to a softmax mixture; alpha is fit on meta-validation episodes, the supernet's weights w on meta-training ones,
alternately.

First order: alpha follows dL_val(w, alpha)/dalpha at the current w. Second order (the paper's eq. 6-7): it
follows the gradient of L_val(w - xi * dL_train(w, alpha)/dw, alpha), differentiated exactly with torch.func
(the paper approximates the Hessian-vector product by finite differences; a test checks this gradient
against finite differences). The virtual step is plain SGD with xi = the weights' current learning rate
(the paper's code adds momentum and weight decay to it). The optimisers are the paper's: SGD with momentum,
cosine-annealed, for w; Adam (betas 0.5, 0.999) with weight decay for alpha.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.errors import BenchError
from ..episodes import Episodes
from ..methods.nas_space import CellChoice, SearchSpace, derive_darts
from .objective import Objective, Params, mixed

DARTS_HPARAMS: dict[str, Any] = {
    "order": 2,
    "w_lr": 0.025,
    "w_lr_min": 0.001,
    "w_momentum": 0.9,
    "w_weight_decay": 3e-4,
    "grad_clip": 5.0,
    "alpha_lr": 3e-4,
    "alpha_weight_decay": 1e-3,
}


def alpha_gradient(
    objective: Objective,
    params: Params,
    alpha: torch.Tensor,
    train_ep: Episodes,
    val_ep: Episodes,
    xi: float,
    order: int,
) -> torch.Tensor:
    """dL_val/dalpha: at w (order 1) or at the weights one virtual SGD step of size xi on L_train away (order 2)."""
    w = {k: v.detach() for k, v in params.items()}
    a = alpha.detach()
    if order == 1:
        a = a.requires_grad_(True)
        loss, _ = objective(w, mixed(a), val_ep)
        return torch.autograd.grad(loss, a)[0]

    def unrolled(a_: torch.Tensor) -> torch.Tensor:
        def train_loss(p: Params) -> torch.Tensor:
            return objective(p, mixed(a_), train_ep)[0]

        g = torch.func.grad(train_loss)(w)
        return objective({k: w[k] - xi * g[k] for k in w}, mixed(a_), val_ep)[0]

    return torch.func.grad(unrolled)(a)


class Darts:
    name = "darts"

    def __init__(self, space: SearchSpace, objective: Objective, hp: dict[str, Any], steps: int, generator):
        self.space, self.objective, self.hp, self.steps = space, objective, hp, max(1, steps)
        if int(hp["order"]) not in (1, 2):
            raise BenchError(f"darts: order={hp['order']}; DARTS is first (1) or second (2) order")
        dev = next(objective.model.parameters()).device
        # the paper's initialisation: 1e-3 * N(0, 1), so the first mixture is nearly uniform but not tied
        init = 1e-3 * torch.randn(len(space.edges), len(space.ops), generator=generator, device=generator.device)
        self.alpha = init.to(dev).requires_grad_(True)
        self.w_opt = torch.optim.SGD(
            list(objective.params().values()),
            lr=hp["w_lr"],
            momentum=hp["w_momentum"],
            weight_decay=hp["w_weight_decay"],
        )
        self.a_opt = torch.optim.Adam(
            [self.alpha], lr=hp["alpha_lr"], betas=(0.5, 0.999), weight_decay=hp["alpha_weight_decay"]
        )
        self.done = 0

    def w_lr(self) -> float:
        lo, hi = self.hp["w_lr_min"], self.hp["w_lr"]
        return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(self.done, self.steps) / self.steps))

    def step(self, train_ep: Episodes, val_ep: Episodes) -> dict[str, float]:
        lr = self.w_lr()
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        params = self.objective.params()
        self.a_opt.zero_grad()
        self.alpha.grad = alpha_gradient(
            self.objective, params, self.alpha, train_ep, val_ep, lr, int(self.hp["order"])
        )
        self.a_opt.step()

        self.w_opt.zero_grad()
        loss, acc = self.objective(params, mixed(self.alpha.detach()), train_ep)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), self.hp["grad_clip"])
        self.w_opt.step()
        self.done += 1
        return {"loss": float(loss.detach()), "acc": float(acc)}

    def weights(self) -> torch.Tensor:
        return self.alpha.detach().softmax(-1).cpu()

    def derive(self, val_eps: list[Episodes]) -> CellChoice:
        return derive_darts(self.space, self.weights())

    def summary(self) -> dict[str, Any]:
        """The final mixture, per edge: what the derived cell was read from."""
        w = self.weights()
        return {
            "alpha_softmax": {
                f"{j}<-{i}": {op: round(float(w[e, o]), 4) for o, op in enumerate(self.space.ops)}
                for e, (j, i) in enumerate(self.space.edges)
            }
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha.detach().cpu(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "done": self.done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.done = int(state["done"])
