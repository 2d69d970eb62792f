"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017), second- or first-order.

The inner loop adapts a copy of all weights to each task's support set with `inner_steps` SGD
steps; the outer loop updates the initialisation from the adapted weights' query loss. Tasks are
batched with `torch.func`: `functional_call` runs the network on a parameter dict, `grad` gives the
inner gradient (differentiable, so the outer gradient is second-order unless `first_order`), and
`vmap` runs all tasks of a meta-batch at once. Batch norm uses per-task batch statistics, as MAML does.
`loop_meta_loss` is the same objective with a plain per-task loop; `bench perf` measures against it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from benchmark.methods import HParamError, MetaLearner, make_backbone, register


class _Net(nn.Module):
    def __init__(self, backbone: str, channels: int, size: int, ways: int):
        super().__init__()
        self.features = make_backbone(backbone, channels, size, running_stats=False)
        self.head = nn.Linear(self.features.out_dim, ways)

    def forward(self, x):
        return self.head(self.features(x))


@register
class MAML(MetaLearner):
    name = "maml"
    paper = "Finn et al., Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks, ICML 2017"
    HPARAMS = {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3, "meta_lr": 1e-3,
               "first_order": False, "meta_batch": 32, "eval_batch": 25}

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.net = _Net(self.hp["backbone"], task.channels, task.image_size, task.ways)

    @classmethod
    def training_episodes(cls, hp, protocol):
        spec = super().training_episodes(hp, protocol)
        if spec.ways != protocol.episode.ways:
            # the head has one output per test-time way; training on another way count has no meaning here
            raise HParamError(f"maml trains with the protocol's {protocol.episode.ways} ways (its head has one "
                              f"output per way); drop train_ways={spec.ways}")
        return spec

    def _loss(self, params, buffers, x, y):
        return F.cross_entropy(functional_call(self.net, (params, buffers), (x,)), y)

    def _adapt(self, params, buffers, sx, sy, steps: int, create_graph: bool):
        lr = self.hp["inner_lr"]
        for _ in range(steps):
            g = grad(self._loss)(params, buffers, sx, sy)
            if not create_graph:
                g = {k: v.detach() for k, v in g.items()}
            params = {k: p - lr * g[k] for k, p in params.items()}
        return params

    def _query_logits(self, support_x, support_y, query_x, steps: int, create_graph: bool):
        params = dict(self.net.named_parameters())
        buffers = dict(self.net.named_buffers())

        def one_task(sx, sy, qx):
            adapted = self._adapt(params, buffers, sx, sy, steps, create_graph)
            return functional_call(self.net, (adapted, buffers), (qx,))

        return vmap(one_task)(support_x, support_y, query_x)

    def predict(self, support_x, support_y, query_x, ways):
        with torch.enable_grad():
            logits = self._query_logits(support_x, support_y, query_x, self.hp["eval_inner_steps"], False)
        return logits.detach()

    def training_step(self, ep, batch_idx):
        logits = self._query_logits(ep.support_x, ep.support_y, ep.query_x, self.hp["inner_steps"],
                                    not self.hp["first_order"])
        loss = F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten())
        acc = (logits.argmax(-1) == ep.query_y).float().mean()
        self.log_dict({"loss": loss, "acc": acc}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hp["meta_lr"])

    def loop_meta_loss(self, ep) -> torch.Tensor:
        """The training objective computed task by task with torch.autograd.grad (the reference for speed)."""
        names = [n for n, _ in self.net.named_parameters()]
        base = [p for _, p in self.net.named_parameters()]
        buffers = dict(self.net.named_buffers())
        losses = []
        for t in range(ep.batch_size):
            params = list(base)
            for _ in range(self.hp["inner_steps"]):
                loss = F.cross_entropy(functional_call(self.net, ({**dict(zip(names, params)), **buffers},),
                                                       (ep.support_x[t],)), ep.support_y[t])
                gs = torch.autograd.grad(loss, params, create_graph=not self.hp["first_order"])
                params = [p - self.hp["inner_lr"] * g for p, g in zip(params, gs)]
            logits = functional_call(self.net, ({**dict(zip(names, params)), **buffers},), (ep.query_x[t],))
            losses.append(F.cross_entropy(logits, ep.query_y[t]))
        return torch.stack(losses).mean()
