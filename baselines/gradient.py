"""What the gradient-based meta-learners share: a network adapted per task by a functional inner loop.

`InnerLoopLearner` (not registered) holds a backbone with batch-statistics normalisation and a linear
head, and runs a task's inner loop on a parameter dict with `torch.func`: `functional_call` runs the
network on the dict, `grad` gives the inner gradient (kept in the graph for second-order methods) and
`vmap` runs every task of a batch at once. A method says which weights its inner loop adapts
(`adapted_names`), how one inner step moves them (`inner_step`) and what is computed once per task
from the weights it does not adapt (`embed`). `loop_meta_loss` is the same objective task by task with
`torch.autograd.grad`: the reference `bench perf` times the batched path against and the tests compare
meta-gradients with.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from benchmark.methods import HParamError, MetaLearner, make_backbone

Params = dict[str, torch.Tensor]


class TaskNet(nn.Module):
    def __init__(self, backbone: str, channels: int, size: int, ways: int):
        super().__init__()
        self.features = make_backbone(backbone, channels, size, running_stats=False)
        self.head = nn.Linear(self.features.out_dim, ways)

    def forward(self, x):
        return self.head(self.features(x))


def probe_backbone(name: str) -> tuple[int, str | None]:
    """(weights at 3 channels and 84px, the first normalisation layer that is not a BatchStatNorm2d or
    None): methods that choose which images share batch-norm statistics need the latter to be None."""
    net = make_backbone(name, 3, 84, running_stats=False)
    foreign = [type(m).__name__ for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    return sum(p.numel() for p in net.parameters()), foreign[0] if foreign else None


def per_task(fn: Callable, batched: bool, *tensors: torch.Tensor) -> torch.Tensor:
    """fn over the leading (task) dimension: vmap, or a plain loop stacking the results."""
    if batched:
        return vmap(fn)(*tensors)
    return torch.stack([fn(*row) for row in zip(*tensors)])


class InnerLoopLearner(MetaLearner):
    force_vmap = False  # vmap on every device (tests and `bench perf` compare the two paths)

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.net = TaskNet(self.hp["backbone"], task.channels, task.image_size, task.ways)

    @classmethod
    def training_episodes(cls, hp, protocol):
        spec = super().training_episodes(hp, protocol)
        if spec.ways != protocol.episode_spec.ways:
            # the head has one output per test-time way; training on another way count has no meaning here
            raise HParamError(
                f"{cls.name} trains with the protocol's {protocol.episode_spec.ways} ways (its head has one "
                f"output per way); drop train_ways={spec.ways}"
            )
        return spec

    # --- what a method changes -------------------------------------------------------------------------
    def adapted_names(self) -> list[str]:
        """The weights the inner loop adapts (all of them here; ANIL: the head's)."""
        return [n for n, _ in self.net.named_parameters()]

    def inner_step(self, adapted: Params, grads: Params) -> Params:
        lr = self.hp["inner_lr"]
        return {k: p - lr * grads[k] for k, p in adapted.items()}

    def embed(self, fixed: Params, x: torch.Tensor) -> torch.Tensor:
        """What the weights outside the inner loop compute once per task (nothing here: the images)."""
        return x

    def logits(self, adapted: Params, fixed: Params, h: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, ({**fixed, **adapted}, dict(self.net.named_buffers())), (h,))

    # --- the shared machinery --------------------------------------------------------------------------
    def split_params(self) -> tuple[Params, Params]:
        names = set(self.adapted_names())
        params = dict(self.net.named_parameters())
        return {k: v for k, v in params.items() if k in names}, {k: v for k, v in params.items() if k not in names}

    def batched(self, device: torch.device) -> bool:
        # On a CPU, vmap's batching rules for convolutions cost more than they save (2-core machine,
        # Omniglot 5-way 1-shot, 5 inner steps: 2.5 tasks/s batched, 3.2 looped); the same function task by
        # task computes the same objective (tests check the two agree).
        return device.type != "cpu" or self.force_vmap

    def adapt(self, adapted: Params, fixed: Params, hs, sy, steps: int, create_graph: bool) -> Params:
        def support_loss(a):
            return F.cross_entropy(self.logits(a, fixed, hs), sy)

        for _ in range(steps):
            g = grad(support_loss)(adapted)
            if not create_graph:
                g = {k: v.detach() for k, v in g.items()}
            adapted = self.inner_step(adapted, g)
        return adapted

    def query_logits(self, support_x, support_y, query_x, steps: int, create_graph: bool) -> torch.Tensor:
        adapted0, fixed = self.split_params()

        def one_task(sx, sy, qx):
            adapted = self.adapt(adapted0, fixed, self.embed(fixed, sx), sy, steps, create_graph)
            return self.logits(adapted, fixed, self.embed(fixed, qx))

        return per_task(one_task, self.batched(support_x.device), support_x, support_y, query_x)

    def second_order(self) -> bool:
        return True

    def predict(self, support_x, support_y, query_x, ways):
        with torch.enable_grad():
            logits = self.query_logits(support_x, support_y, query_x, self.hp["eval_inner_steps"], False)
        return logits.detach()

    def training_step(self, ep, batch_idx):
        logits = self.query_logits(ep.support_x, ep.support_y, ep.query_x, self.hp["inner_steps"], self.second_order())
        loss = F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten())
        acc = (logits.argmax(-1) == ep.query_y).float().mean()
        self.log_dict({"loss": loss, "acc": acc}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hp["meta_lr"])

    def loop_meta_loss(self, ep) -> torch.Tensor:
        """The training objective task by task with torch.autograd.grad (the reference for speed and
        for the batched path's meta-gradient)."""
        adapted0, fixed = self.split_params()
        names = list(adapted0)
        losses = []
        for t in range(ep.batch_size):
            hs, hq = self.embed(fixed, ep.support_x[t]), self.embed(fixed, ep.query_x[t])
            adapted = dict(adapted0)
            for _ in range(self.hp["inner_steps"]):
                loss = F.cross_entropy(self.logits(adapted, fixed, hs), ep.support_y[t])
                gs = torch.autograd.grad(loss, [adapted[n] for n in names], create_graph=self.second_order())
                adapted = self.inner_step(adapted, dict(zip(names, gs)))
            losses.append(F.cross_entropy(self.logits(adapted, fixed, hq), ep.query_y[t]))
        return torch.stack(losses).mean()
