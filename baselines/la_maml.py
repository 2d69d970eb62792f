"""La-MAML (Gupta, Yadav & Paull, La-MAML: Look-ahead Meta Learning for Continual Learning, NeurIPS 2020;
Algorithm 1, the asynchronous update).

Pre-trains plainly, then for each incoming batch: draw `replay_batch` examples from the reservoir; run an inner
loop of SGD steps on the incoming batch, split into `inner_batches` consecutive chunks (one step each), on a
functional copy of the weights with a learned step size per weight, alpha (initialised at `alpha_init`); score the
look-ahead weights on the incoming batch and the replayed examples together (the meta-loss); its gradient updates
alpha first (SGD at `alpha_lr`) and then the weights, each moved by max(alpha, 0) times its meta-gradient: a weight
whose alpha went negative is frozen for that update, and alpha can recover through later meta-gradients. Both
meta-gradients are clipped to norm `grad_clip` and the inner gradients element-wise to [-grad_clip, grad_clip]
(0: no clipping), as in the reference code. The incoming batch is then offered to the reservoir (`buffer_size`).
`online_steps` repeats the update on the same batch with fresh replay draws (the paper's "glances").

Defaults: the reference code's La-MAML run on single-pass CIFAR-100 (its conv-net benchmark, the closest to
Omniglot's Conv-4): a 200-example reservoir, 10 replayed examples, alpha_init 0.1, alpha_lr 0.25, the incoming batch
of 10 split into 5 inner steps, second-order meta-gradients, clipping at 1.0. What differs: one glance per batch
(the CIFAR run takes 10) so that every learner makes one pass with one update per incoming batch, as the protocols
intend; the meta-loss is taken at the end of the inner loop, as Algorithm 1 writes it (the code averages it over
the inner steps; the same on the OML stream, whose batches hold one image). The paper's MNIST runs are first order
(`first_order=true`) and step the inner loop with max(alpha, 0); here the inner loop uses alpha as it is, as
Algorithm 1 and the CIFAR code do. No task identities: replay draws from the whole reservoir (the code's
use_old_task_memory does not apply to a stream of classes). The weights' step size is alpha, so online_lr is unused.
"""

from __future__ import annotations

import torch

from benchmark.methods import register

from .replay import Params, ReplayLearner, functional_loss, functional_sgd_step, with_replay


@register
class LaMAML(ReplayLearner):
    name = "la-maml"
    paper = "Gupta, Yadav & Paull, La-MAML: Look-ahead Meta Learning for Continual Learning, NeurIPS 2020"
    HPARAMS = {
        **ReplayLearner.HPARAMS,
        "alpha_init": 0.1,
        "alpha_lr": 0.25,
        "inner_batches": 5,
        "first_order": False,
        "grad_clip": 1.0,
    }
    HPARAM_BOUNDS = {**ReplayLearner.HPARAM_BOUNDS, "inner_batches": (1, None), "grad_clip": (0, None)}

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.alphas: Params | None = None

    @classmethod
    def defaults(cls):
        return {k: v for k, v in super().defaults().items() if k != "online_lr"}

    def begin_continual(self) -> None:
        super().begin_continual()
        self.alphas = None

    def weights(self) -> dict[str, torch.nn.Parameter]:
        """The online weights (the contract's `online_parameters`) by name, for functional calls."""
        online = {id(p) for p in self.online_parameters()}
        return {n: p for n, p in self.named_parameters() if id(p) in online}

    def learning_rates(self) -> Params:
        """alpha, one per weight, started at alpha_init on the first update of a stream."""
        if self.alphas is None:
            self.alphas = {n: torch.full_like(p, self.hp["alpha_init"]) for n, p in self.weights().items()}
        return self.alphas

    def meta_loss(self, alphas: Params, x, y, bx, by, seen: int) -> torch.Tensor:
        """The loss on (bx, by) of the weights after the inner loop on (x, y) with step sizes `alphas`."""
        fast: Params = dict(self.weights())
        for idx in torch.arange(len(x), device=x.device).tensor_split(min(int(self.hp["inner_batches"]), len(x))):
            fast = functional_sgd_step(
                self,
                fast,
                x[idx],
                y[idx],
                seen,
                alphas,
                create_graph=not self.hp["first_order"],
                clamp=float(self.hp["grad_clip"]),
            )
        return functional_loss(self, fast, bx, by, seen)

    def meta_gradients(self, x, y, seen: int, drawn) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(d meta-loss / d alpha, d meta-loss / d weights), unclipped, in `weights()` order."""
        weights = self.weights()
        alphas = {n: a.detach().requires_grad_() for n, a in self.learning_rates().items()}
        bx, by = with_replay(x, y, drawn)
        with torch.enable_grad():
            loss = self.meta_loss(alphas, x, y, bx, by, seen)
            grads = torch.autograd.grad(loss, [*alphas.values(), *weights.values()], allow_unused=True)
        tensors = [*alphas.values(), *weights.values()]
        grads = tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors))
        return list(grads[: len(alphas)]), list(grads[len(alphas) :])

    def observe(self, x, y, seen):
        for glance in range(int(self.hp["online_steps"])):
            g_alpha, g_weight = self.meta_gradients(x, y, seen, self.replay())
            clip = float(self.hp["grad_clip"])
            if clip > 0:
                g_alpha, g_weight = clip_norm(g_alpha, clip), clip_norm(g_weight, clip)
            alphas = self.learning_rates()
            with torch.no_grad():
                for (name, p), ga, gw in zip(self.weights().items(), g_alpha, g_weight):
                    alphas[name] = alphas[name] - self.hp["alpha_lr"] * ga
                    p.sub_(alphas[name].clamp_min(0) * gw)
            if glance == 0:  # later glances may replay the batch, as in the reference code
                self.buffer.add(x, y)


def clip_norm(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """Scale the gradients together so that their joint norm is at most max_norm (torch's clip_grad_norm_ rule)."""
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    return [g * scale for g in grads]
