"""Reptile (Nichol, Achiam & Schulman 2018, On First-Order Meta-Learning Algorithms).

Each task of a meta-batch trains a copy of the weights for `inner_steps` steps of Adam (beta1 = 0, as
the paper) or SGD, on mini-batches of `inner_batch` examples drawn from all of the task's training
examples (Reptile has no support/query split in training: the recipe's `train_shots` are the paper's
"training shots", and the episode's query images are not used). The outer step moves the
initialisation towards the mean adapted weights, theta += eps * (mean(phi) - theta), with eps
annealed linearly from `meta_step` to `meta_step_final` over the step budget; it is taken as an SGD
step on the surrogate 0.5 * ||theta - mean(phi)||^2, whose gradient is theta - mean(phi).

At test time the weights adapt to the support set for `eval_inner_steps` steps of `eval_inner_batch`
examples. Evaluation is non-transductive by default, as the paper's main table: batch norm sees the
support set and one query at a time. transductive=true normalises the queries together (the
paper's transductive rows); the record's hyper-parameters say which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from benchmark.methods import HParamError, PaperResult, Recipe, register, statistics_from

from .gradient import InnerLoopLearner, Params, probe_backbone

_TABLE3 = "Nichol et al. 2018, Appendix A, and the command lines in the reference code's README"
_CODE = (
    "The reference code keeps its inner Adam state from task to task; here each task starts a fresh Adam (so "
    "the tasks of a meta-batch run in parallel). The paper trained for {iters} outer iterations; here the "
    "protocol's step budget, with eps annealed to 0 over it."
)
_NONTRANS = "Nichol et al. 2018, Table 2 (non-transductive; transductive {t})"
_MI = "Nichol et al. 2018, Table 1 (non-transductive; transductive {t})"


_WIDER = "the paper's network has 32 filters per layer, this project's conv4 64. "


def _recipe(family, lr, steps, batch, train_shots, eval_batch, iters, note="", **only) -> Recipe:
    """The paper's set-up for a family (Appendix A; the README's command lines): 5 tasks per meta-batch,
    50 test-time steps; the episode's one query per class is drawn but not used in training."""
    hp = {
        "inner_lr": lr,
        "inner_steps": steps,
        "inner_batch": batch,
        "train_shots": train_shots,
        "train_queries": 1,
        "eval_inner_steps": 50,
        "eval_inner_batch": eval_batch,
        "meta_batch": 5,
    }
    return Recipe(family, hp, source=_TABLE3, note=note + _CODE.format(iters=iters), **only)


def _surrogate(theta: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """0.5 * ||theta - target||^2, whose gradient in theta is theta - target."""
    return torch.stack([0.5 * (t - m).pow(2).sum() for t, m in zip(theta, target)]).sum()


@register
class Reptile(InnerLoopLearner):
    name = "reptile"
    paper = "Nichol, Achiam & Schulman, On First-Order Meta-Learning Algorithms, arXiv 2018"
    HPARAMS = {
        "inner_optimizer": "adam",  # or "sgd"
        "inner_lr": 1e-3,
        "inner_steps": 5,
        "inner_batch": 10,
        "eval_inner_steps": 50,
        "eval_inner_batch": 5,
        "meta_step": 1.0,
        "meta_step_final": 0.0,
        "meta_batch": 5,
        "transductive": False,
        # non-transductive scoring runs the support set once per query: 20-way 1-shot is 300 x 21 images per
        # episode, so fewer episodes per pass (memory, not results, depends on it)
        "eval_batch": 5,
    }
    HPARAM_BOUNDS = {
        "inner_steps": (1, None),
        "eval_inner_steps": (1, None),
        "inner_batch": (1, None),
        "eval_inner_batch": (1, None),
        "meta_step": (0, None),
        "meta_step_final": (0, None),
    }
    RECIPES = (
        _recipe("omniglot", 1e-3, 5, 10, 10, 5, "100,000", ways=5),
        _recipe("omniglot", 5e-4, 10, 20, 10, 10, "200,000", ways=20),
        _recipe("mini-imagenet", 1e-3, 8, 10, 15, 5, "100,000", shots=1, note=_WIDER),
        _recipe("mini-imagenet", 1e-3, 8, 10, 15, 15, "100,000", shots=5, note=_WIDER),
    )
    PAPER_RESULTS = {
        "omniglot-5w1s": PaperResult(95.39, 0.09, _NONTRANS.format(t="97.68 +/- 0.04")),
        "omniglot-5w5s": PaperResult(98.90, 0.10, _NONTRANS.format(t="99.48 +/- 0.06")),
        "omniglot-20w1s": PaperResult(88.14, 0.15, _NONTRANS.format(t="89.43 +/- 0.14")),
        "omniglot-20w5s": PaperResult(96.65, 0.33, _NONTRANS.format(t="97.12 +/- 0.32")),
        "mini-imagenet-5w1s": PaperResult(47.07, 0.26, _MI.format(t="49.97 +/- 0.32"), "32 filters per layer"),
        "mini-imagenet-5w5s": PaperResult(62.74, 0.37, _MI.format(t="65.99 +/- 0.58"), "32 filters per layer"),
    }

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if hp["inner_optimizer"] not in ("adam", "sgd"):
            raise HParamError(f"reptile: inner_optimizer={hp['inner_optimizer']!r} is not one of adam, sgd")
        foreign = None if hp["transductive"] else probe_backbone(hp["backbone"])[1]
        if foreign:
            raise HParamError(
                f"reptile: backbone={hp['backbone']} has {foreign} layers, which cannot normalise each query "
                "with the support set alone (non-transductive scoring); use a backbone built on "
                "BatchStatNorm2d (conv4, resnet12) or transductive=true"
            )
        if hp["meta_step_final"] > hp["meta_step"]:
            raise HParamError(
                f"reptile: meta_step_final={hp['meta_step_final']} is larger than meta_step={hp['meta_step']}; "
                "the outer step size anneals down to it"
            )
        return hp

    # --- the inner loop: mini-batches of a task's examples, Adam (beta1 = 0) or SGD ----------------------
    def _adapt_task(self, params: Params, x, y, order: torch.Tensor) -> Params:
        """order [steps, batch]: the examples of each step (shared by all tasks of a meta-batch)."""

        def loss(p, xb, yb):
            return F.cross_entropy(functional_call(self.net, p, (xb,)), yb)

        sq = {k: torch.zeros_like(v) for k, v in params.items()}
        for t, idx in enumerate(order, start=1):
            g = grad(loss)(params, x[idx], y[idx])
            moved = {k: self._inner_update(params[k], g[k], sq[k], t) for k in params}
            params, sq = {k: m[0] for k, m in moved.items()}, {k: m[1] for k, m in moved.items()}
        return params

    def _inner_update(self, p, g, sq, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One inner step of one weight tensor at step t (from 1): (new weight, new running mean of g^2)."""
        lr = self.hp["inner_lr"]
        if self.hp["inner_optimizer"] != "adam":
            return p - lr * g, sq
        # beta1 = 0: the step is the gradient over its running RMS (beta2 = 0.999, bias-corrected)
        sq = 0.999 * sq + 0.001 * g**2
        return p - lr * g / ((sq * (1 / (1 - 0.999**t))).sqrt() + 1e-8), sq

    @staticmethod
    def _order(n: int, steps: int, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mini-batches as the reference code draws them: shuffled passes over the n examples."""
        batch = min(batch, n)
        passes = -(-steps * batch // n)
        flat = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
        return flat[: steps * batch].view(steps, batch).to(device)

    def _adapted(self, x, y, steps: int, batch: int, generator: torch.Generator | None = None) -> Params:
        """Adapted weights of every task: x [B, M, ...], y [B, M] -> {name: [B, *shape]}."""
        params = {k: v.detach() for k, v in self.net.named_parameters()}
        order = self._order(x.shape[1], steps, batch, x.device, generator)
        one = lambda xt, yt: self._adapt_task(params, xt, yt, order)  # noqa: E731
        if self.batched(x.device):
            return vmap(one)(x, y)
        outs = [one(xt, yt) for xt, yt in zip(x, y)]
        return {k: torch.stack([o[k] for o in outs]) for k in params}

    def training_step(self, ep, batch_idx):
        phi = self._adapted(ep.support_x, ep.support_y, self.hp["inner_steps"], self.hp["inner_batch"])
        theta = dict(self.net.named_parameters())
        # the surrogate's gradient is theta - mean(phi): SGD at eps takes the Reptile step
        loss = _surrogate([theta[k] for k in theta], [phi[k].mean(0).detach() for k in theta])
        self.log_dict({"distance": loss.detach()}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.net.parameters(), lr=self.hp["meta_step"])
        trainer = getattr(self, "_trainer", None)
        total = max(1, int(trainer.max_steps)) if trainer is not None else 1
        start, end = self.hp["meta_step"], self.hp["meta_step_final"]
        frac = (lambda i: 1 - (1 - end / start) * min(i, total) / total) if start > 0 else (lambda i: 0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, frac)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- evaluation ---------------------------------------------------------------------------------------
    def predict(self, support_x, support_y, query_x, ways):
        # a fixed mini-batch order: an episode's answer must not depend on the batch it came in or on the
        # random state (`bench verify` re-runs single episodes)
        order_rng = torch.Generator().manual_seed(0)
        with torch.enable_grad():
            phi = self._adapted(
                support_x, support_y, self.hp["eval_inner_steps"], self.hp["eval_inner_batch"], order_rng
            )
        phi = {k: v.detach() for k, v in phi.items()}
        if self.hp["transductive"]:
            one_task = lambda p, sx, qx: functional_call(self.net, p, (qx,))  # noqa: E731
        else:
            # each query with the support set as its own small batch, so batch norm cannot pool the
            # queries; all of an episode's small batches go through the network in one pass
            q = query_x.shape[1]

            def one_task(p, sx, qx):
                both = torch.cat([sx.unsqueeze(0).expand(q, *sx.shape), qx.unsqueeze(1)], dim=1)
                return functional_call(self.net, p, (both.flatten(0, 1),)).view(q, sx.shape[0] + 1, -1)[:, -1]

        with statistics_from(self.net, groups=1 if self.hp["transductive"] else query_x.shape[1]):
            if self.batched(support_x.device):
                return vmap(one_task)(phi, support_x, query_x)
            tasks = zip(support_x, query_x)
            return torch.stack(
                [one_task({k: v[t] for k, v in phi.items()}, sx, qx) for t, (sx, qx) in enumerate(tasks)]
            )

    def loop_meta_loss(self, ep) -> torch.Tensor:
        """The surrogate task by task with torch.autograd.grad: the reference for speed and gradients."""
        names = [n for n, _ in self.net.named_parameters()]
        theta = [p for _, p in self.net.named_parameters()]
        order = self._order(ep.support_x.shape[1], self.hp["inner_steps"], self.hp["inner_batch"], ep.support_x.device)
        return self._loop_surrogate(ep, names, theta, order)

    def _loop_surrogate(self, ep, names, theta, order) -> torch.Tensor:
        finals = []
        for t in range(ep.batch_size):
            params = [p.detach().requires_grad_() for p in theta]
            sq = [torch.zeros_like(p) for p in params]
            for step, idx in enumerate(order, start=1):
                out = functional_call(self.net, dict(zip(names, params)), (ep.support_x[t][idx],))
                gs = torch.autograd.grad(F.cross_entropy(out, ep.support_y[t][idx]), params)
                with torch.no_grad():
                    moved = [self._inner_update(p, g, s, step) for p, g, s in zip(params, gs, sq)]
                params, sq = [m[0].requires_grad_() for m in moved], [m[1] for m in moved]
            finals.append([p.detach() for p in params])
        mean = [torch.stack(ps).mean(0) for ps in zip(*finals)]
        return _surrogate(theta, mean)
