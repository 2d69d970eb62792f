"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, ICLR 2020).

MAML with the inner loop on the head only: the body's features of a task are computed once, the
linear head adapts to the support features by `inner_steps` SGD steps, and the outer loop learns body
and head initialisation from the query loss, second order through the head's inner steps. The paper
uses MAML's architecture and set-up, so the recipes are MAML's (its appendix was not at hand to check
each value; the recipe notes say so).
"""

from __future__ import annotations

from torch.func import functional_call

from benchmark.methods import PaperResult, Recipe, register

from .gradient import InnerLoopLearner
from .maml import MAML

_RAGHU = "Raghu et al. 2020, Table 2"
_SD = "the paper's +/- is a standard deviation over three seeds, not a confidence interval"
_SAME = (
    "Finn et al. 2017, A.1: Raghu et al. 2020 use MAML's architecture and set-up (their Appendix B gives the details)"
)


@register
class ANIL(InnerLoopLearner):
    name = "anil"
    paper = "Raghu et al., Rapid Learning or Feature Reuse? Towards Understanding the Effectiveness of MAML, ICLR 2020"
    HPARAMS = {k: v for k, v in MAML.HPARAMS.items() if k != "first_order"}
    HPARAM_BOUNDS = MAML.HPARAM_BOUNDS
    SEARCH_SPACE = MAML.SEARCH_SPACE
    RECIPES = tuple(Recipe(r.family, r.hparams, r.train_steps, r.ways, r.shots, _SAME, r.note) for r in MAML.RECIPES)
    PAPER_RESULTS = {
        "omniglot-20w1s": PaperResult(96.2, None, _RAGHU, "+/- 0.5; " + _SD),
        "omniglot-20w5s": PaperResult(98.0, None, _RAGHU, "+/- 0.3; " + _SD),
        "mini-imagenet-5w1s": PaperResult(46.7, None, _RAGHU, "+/- 0.4; 32 filters per layer; " + _SD),
        "mini-imagenet-5w5s": PaperResult(61.5, None, _RAGHU, "+/- 0.5; 32 filters per layer; " + _SD),
    }

    def adapted_names(self):
        return [f"head.{n}" for n, _ in self.net.head.named_parameters()]

    def embed(self, fixed, x):
        body = {k.removeprefix("features."): v for k, v in fixed.items()}
        return functional_call(self.net.features, body, (x,))

    def logits(self, adapted, fixed, h):
        return functional_call(self.net.head, {k.removeprefix("head."): v for k, v in adapted.items()}, (h,))
