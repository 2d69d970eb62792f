"""Meta-SGD (Li, Zhou, Chen & Li, 2017): learn the initialisation and a learning rate per weight.

One inner step moves each weight by its own learned rate: theta' = theta - alpha * grad, with alpha
of the same shape as theta, sign free (a coordinate may learn to step uphill), initialised uniformly
in [alpha_low, alpha_high]. The outer loop learns theta and alpha together from the query loss,
second order, as MAML does (same code path, gradient.py).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.methods import HParamError, PaperResult, Recipe, register

from .gradient import InnerLoopLearner
from .maml import MAML

_SETUP = (
    "Li et al. 2017 (one inner step; alpha initialised in [0.005, 0.1]) on MAML's task set-up (Finn et al. 2017, "
    "A.1), which the paper follows; its own hyper-parameter text was not at hand to check each value"
)
_TABLE = "Li et al. 2017, Table 2"
_TABLE_MI = "Li et al. 2017, Table 3"


@register
class MetaSGD(InnerLoopLearner):
    name = "meta-sgd"
    paper = "Li et al., Meta-SGD: Learning to Learn Quickly for Few-Shot Learning, arXiv 2017"
    HPARAMS = {
        "inner_steps": 1,
        "eval_inner_steps": 1,
        "alpha_low": 0.005,
        "alpha_high": 0.1,
        "meta_lr": 1e-3,
        "meta_batch": 32,
        "eval_batch": 25,
    }
    HPARAM_BOUNDS = {"inner_steps": (1, None), "eval_inner_steps": (1, None)}
    # the task set-up (meta-batch, queries per class) of MAML's recipes, without MAML's inner loop
    RECIPES = tuple(
        Recipe(
            r.family,
            {k: v for k, v in r.hparams.items() if k in ("meta_batch", "train_queries")},
            r.train_steps,
            r.ways,
            r.shots,
            source=_SETUP,
            note=f"one inner step with a learned rate per weight; meta-batch and queries of maml:{r.key}; the "
            "protocol's step budget",
        )
        for r in MAML.RECIPES
    )
    PAPER_RESULTS = {
        "omniglot-5w1s": PaperResult(99.53, 0.26, _TABLE),
        "omniglot-5w5s": PaperResult(99.93, 0.09, _TABLE),
        "omniglot-20w1s": PaperResult(95.93, 0.38, _TABLE),
        "omniglot-20w5s": PaperResult(98.97, 0.19, _TABLE),
        "mini-imagenet-5w1s": PaperResult(50.47, 1.87, _TABLE_MI, "32 filters per layer"),
        "mini-imagenet-5w5s": PaperResult(64.03, 0.94, _TABLE_MI, "32 filters per layer"),
    }

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if not 0 <= hp["alpha_low"] <= hp["alpha_high"]:
            raise HParamError(
                f"meta-sgd: the initial learning rates are drawn from [alpha_low, alpha_high] = "
                f"[{hp['alpha_low']}, {hp['alpha_high']}]; give 0 <= alpha_low <= alpha_high"
            )
        return hp

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        lo, hi = self.hp["alpha_low"], self.hp["alpha_high"]
        # one learned rate per weight, in the order of the network's parameters (ParameterDict keys may not
        # hold dots)
        self.alpha = nn.ParameterList(nn.Parameter(torch.empty_like(p).uniform_(lo, hi)) for p in self.net.parameters())
        self._alpha_index = {n: i for i, (n, _) in enumerate(self.net.named_parameters())}

    def inner_step(self, adapted, grads):
        return {k: p - self.alpha[self._alpha_index[k]] * grads[k] for k, p in adapted.items()}
