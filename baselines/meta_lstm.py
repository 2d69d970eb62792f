"""The LSTM meta-learner (Ravi & Larochelle, Optimization as a Model for Few-Shot Learning, ICLR 2017).

A learned optimiser: every weight of the learner (Conv-4 and a linear head) is one coordinate of a
two-layer, coordinate-wise LSTM whose second layer's cell state *is* the learner's weights. At each of
`inner_steps` updates on the support set the learner's loss and gradient, each preprocessed as
(log|x| / p, sign x) or (-1, e^p x) for tiny values (p = 10), feed a shared LSTM (20 units); its
state, the previous weight and the previous gate give a learned forget gate f and input gate i, and
the weights become  c_t = sigmoid(f_t) * c_{t-1} - sigmoid(i_t) * grad_t.  The cell's initial state
c_0 is the learner's initialisation, meta-learned with the LSTM from the query loss after the last
update; as in the paper, the gradient and loss inputs are treated as constants (no second
derivatives). Gate biases start at f ~ U(4, 6) (remember) and i ~ U(-5, -4) (small steps).

Batch norm as in the paper: the learner always normalises with batch statistics in the inner loop;
the query batch uses its own statistics during meta-training, and at meta-test the statistics the
support set gave (the reference code's running averages, collected over the inner loop on the
support set, with momentum 0.9 dominated by the last update; here the support statistics under the
final weights), so a test query's answer does not depend on the other queries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value

from benchmark.methods import (
    HParamError,
    PaperResult,
    Recipe,
    register,
    statistics_from,
)

from .gradient import InnerLoopLearner, per_task, probe_backbone

MAX_COORDINATES = 1_000_000  # learner weights the LSTM can drive at once: [weights, 20] states per update
_RL = "Ravi & Larochelle 2017, Sec. 3-4, and the reference code (twitter/meta-learning-lstm)"
_NOTE = (
    "the paper's learner has 32 filters per layer, this project's conv4 64; the paper trained for {n} "
    "episodes, here the protocol's step budget"
)
_OMNI = (
    "no Omniglot set-up is published: the mini-ImageNet one for the same shots (12 updates on the whole "
    "support set for 1-shot, 8 for 5-shot)"
)


def preprocess(x: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """The paper's input scaling, [...] -> [..., 2]: magnitude on a log scale and sign, or a linear code
    for values smaller than e^-p."""
    big = x.abs() >= math.exp(-p)
    mag = torch.where(big, x.abs().clamp_min(1e-38).log() / p, torch.full_like(x, -1.0))
    sign = torch.where(big, torch.sign(x), math.exp(p) * x)
    return torch.stack([mag, sign], dim=-1)


@register
class MetaLSTM(InnerLoopLearner):
    name = "meta-lstm"
    paper = "Ravi & Larochelle, Optimization as a Model for Few-Shot Learning, ICLR 2017"
    HPARAMS = {
        "inner_steps": 12,
        "hidden": 20,
        "meta_lr": 1e-3,
        "grad_clip": 0.25,
        "meta_batch": 1,
        "eval_batch": 10,
    }
    HPARAM_BOUNDS = {"inner_steps": (1, None), "hidden": (1, None), "grad_clip": (0, None)}
    RECIPES = (
        Recipe("omniglot", {"inner_steps": 12}, shots=1, source=_RL, note=_OMNI),
        Recipe("omniglot", {"inner_steps": 8}, shots=5, source=_RL, note=_OMNI),
        Recipe("mini-imagenet", {"inner_steps": 12}, shots=1, source=_RL, note=_NOTE.format(n="75,000")),
        Recipe("mini-imagenet", {"inner_steps": 8}, shots=5, source=_RL, note=_NOTE.format(n="50,000")),
    )
    PAPER_RESULTS = {
        "mini-imagenet-5w1s": PaperResult(43.44, 0.77, "Ravi & Larochelle 2017, Table 1", "32 filters per layer"),
        "mini-imagenet-5w5s": PaperResult(60.60, 0.71, "Ravi & Larochelle 2017, Table 1", "32 filters per layer"),
    }

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        weights, foreign = probe_backbone(hp["backbone"])
        if weights > MAX_COORDINATES or foreign:
            why = (
                f"{weights:,} weights at 84px; every learner weight is one coordinate of its LSTM, and it drives "
                f"at most {MAX_COORDINATES:,}"
                if weights > MAX_COORDINATES
                else f"its {foreign} layers cannot take the support set's statistics at test time"
            )
            raise HParamError(
                f"meta-lstm cannot drive backbone={hp['backbone']} ({why}); the paper's learner is conv4 "
                "(about 120,000 weights): use backbone=conv4"
            )
        return hp

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        h = self.hp["hidden"]
        self.lstm_in = nn.Linear(4, 4 * h)  # the first layer: an LSTM over (loss, gradient) features
        self.lstm_rec = nn.Linear(h, 4 * h, bias=False)
        self.forget = nn.Linear(h + 2, 1)  # [lstm state, previous weight, previous gate] -> gate
        self.input = nn.Linear(h + 2, 1)
        for layer in (self.lstm_in, self.lstm_rec, self.forget, self.input):
            nn.init.uniform_(layer.weight, -0.01, 0.01)
        nn.init.uniform_(self.lstm_in.bias, -0.01, 0.01)
        nn.init.uniform_(self.forget.bias, 4.0, 6.0)
        nn.init.uniform_(self.input.bias, -5.0, -4.0)
        self._shapes = [(n, p.shape) for n, p in self.net.named_parameters()]

    def _unflatten(self, c: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for name, shape in self._shapes:
            n = math.prod(shape)
            out[name] = c[i : i + n].view(shape)
            i += n
        return out

    def _learner_loss(self, c, x, y):
        return F.cross_entropy(functional_call(self.net, self._unflatten(c), (x,)), y)

    def _update(self, state, c, loss, g):
        """One meta-LSTM update of the weights c [P] from the (constant) loss and gradient g [P]."""
        h, s, f, i = state
        x = torch.cat([preprocess(loss.detach()).expand(c.shape[0], 2), preprocess(g.detach())], dim=1)
        gi, gf, gg, go = (self.lstm_in(x) + self.lstm_rec(h)).chunk(4, dim=1)
        s = torch.sigmoid(gf) * s + torch.sigmoid(gi) * torch.tanh(gg)
        h = torch.sigmoid(go) * torch.tanh(s)
        f = self.forget(torch.cat([h, c.unsqueeze(1), f], dim=1))
        i = self.input(torch.cat([h, c.unsqueeze(1), i], dim=1))
        c = torch.sigmoid(f).squeeze(1) * c - torch.sigmoid(i).squeeze(1) * g.detach()
        return (h, s, f, i), c

    def _initial(self, c0):
        p, h = c0.shape[0], self.hp["hidden"]
        z = c0.new_zeros(p, h)
        return (z, z, c0.new_zeros(p, 1), c0.new_zeros(p, 1))

    def _query_logits(self, c, sx, qx, at_test: bool):
        params = self._unflatten(c)
        if not at_test:
            return functional_call(self.net, params, (qx,))
        with statistics_from(self.net, sx.shape[0]):  # the support set's statistics, not the queries'
            return functional_call(self.net, params, (torch.cat([sx, qx]),))[sx.shape[0] :]

    def _task(self, sx, sy, qx, at_test: bool):
        c = torch.cat([p.flatten() for p in self.net.parameters()])
        state = self._initial(c)
        for _ in range(self.hp["inner_steps"]):
            g, loss = grad_and_value(self._learner_loss)(c.detach(), sx, sy)
            state, c = self._update(state, c, loss, g)
        return self._query_logits(c, sx, qx, at_test)

    def _all_tasks(self, support_x, support_y, query_x, at_test: bool):
        fn = lambda sx, sy, qx: self._task(sx, sy, qx, at_test)  # noqa: E731
        return per_task(fn, self.batched(support_x.device), support_x, support_y, query_x)

    def predict(self, support_x, support_y, query_x, ways):
        with torch.enable_grad():
            logits = self._all_tasks(support_x, support_y, query_x, at_test=True)
        return logits.detach()

    def training_step(self, ep, batch_idx):
        logits = self._all_tasks(ep.support_x, ep.support_y, ep.query_x, at_test=False)
        loss = F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten())
        acc = (logits.argmax(-1) == ep.query_y).float().mean()
        self.log_dict({"loss": loss, "acc": acc}, prog_bar=True, on_step=True)
        return loss

    def on_before_optimizer_step(self, optimizer):
        if self.hp["grad_clip"] > 0:  # the paper clips the meta-gradient's norm at 0.25
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.hp["grad_clip"])

    def loop_meta_loss(self, ep) -> torch.Tensor:
        """The training objective task by task, the learner's gradients by torch.autograd.grad."""
        losses = []
        for sx, sy, qx, qy in zip(ep.support_x, ep.support_y, ep.query_x, ep.query_y):
            c = torch.cat([p.flatten() for p in self.net.parameters()])
            state = self._initial(c)
            for _ in range(self.hp["inner_steps"]):
                leaf = c.detach().requires_grad_()
                loss = self._learner_loss(leaf, sx, sy)
                (g,) = torch.autograd.grad(loss, leaf)
                state, c = self._update(state, c, loss, g)
            losses.append(F.cross_entropy(self._query_logits(c, sx, qx, False), qy))
        return torch.stack(losses).mean()
