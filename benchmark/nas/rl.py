"""Reinforcement-learning search: an LSTM controller (Zoph & Le, ICLR 2017) trained with REINFORCE on the
validation accuracy of the cells it samples, each evaluated with weights shared in one supernet (ENAS, Pham et
al., ICML 2018) rather than trained from scratch.

The controller emits, node by node, which earlier nodes feed it (distinct, `inputs` of them) and the operation
on each edge; every decision is a softmax fed back as the next step's input. Each step trains the shared
weights on meta-training episodes with a sampled cell, then samples another cell, scores it on meta-validation
episodes, and moves the controller along (reward - baseline) * grad log p, the baseline an exponential moving
average of earlier rewards, plus an entropy bonus (ENAS). The found cell is the best on the validation
episodes among the controller's most likely cell and `candidates` samples (ENAS's derivation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..episodes import Episodes
from ..methods.nas_space import CellChoice, SearchSpace
from .objective import Objective, chosen

ENAS_HPARAMS: dict[str, Any] = {
    "w_lr": 0.05,
    "w_lr_min": 0.0005,
    "w_momentum": 0.9,
    "w_weight_decay": 1e-4,
    "grad_clip": 5.0,
    "controller_lr": 3.5e-4,
    "controller_hidden": 64,
    "entropy_weight": 1e-4,
    "baseline_decay": 0.99,
    "candidates": 8,
}


class Controller(nn.Module):
    def __init__(self, space: SearchSpace, hidden: int):
        super().__init__()
        self.space = space
        self.ops = space.choosable
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.op_embed = nn.Embedding(len(self.ops), hidden)
        self.input_embed = nn.Embedding(space.nodes, hidden)
        self.op_head = nn.Linear(hidden, len(self.ops))
        self.input_head = nn.Linear(hidden, space.nodes)
        for head in (self.op_head, self.input_head):  # the first cells are drawn uniformly
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def sample(
        self, generator: torch.Generator | None = None, greedy: bool = False
    ) -> tuple[CellChoice, torch.Tensor, torch.Tensor, list[dict[str, float]]]:
        """(cell, log-probability, entropy, each operation decision's distribution) of one sampled cell."""
        x, state = self.start, None
        logp, entropy = torch.zeros(()), torch.zeros(())
        cell, op_probs = [], []

        def decide(logits: torch.Tensor) -> int:
            nonlocal logp, entropy
            dist = torch.distributions.Categorical(logits=logits.squeeze(0))
            k = int(dist.probs.argmax()) if greedy else int(torch.multinomial(dist.probs, 1, generator=generator))
            logp = logp + dist.log_prob(torch.tensor(k))
            entropy = entropy + dist.entropy()
            return k

        for j in range(1, self.space.nodes + 1):
            node: list[tuple[str, int]] = []
            for _ in range(self.space.kept(j)):
                state = self.lstm(x, state)
                logits = self.input_head(state[0])
                taken = torch.tensor([i >= j or i in [p for _, p in node] for i in range(self.space.nodes)])
                i = decide(logits.masked_fill(taken, -math.inf))
                x = self.input_embed(torch.tensor([i]))
                state = self.lstm(x, state)
                logits = self.op_head(state[0])
                op_probs.append({op: float(p) for op, p in zip(self.ops, logits.detach().softmax(-1).squeeze(0))})
                o = decide(logits)
                x = self.op_embed(torch.tensor([o]))
                node.append((self.ops[o], i))
            cell.append(tuple(sorted(node, key=lambda t: t[1])))
        return tuple(cell), logp, entropy, op_probs


class Enas:
    name = "rl"

    def __init__(self, space: SearchSpace, objective: Objective, hp: dict[str, Any], steps: int, seed: int):
        self.space, self.objective, self.hp, self.steps = space, objective, hp, max(1, steps)
        self.controller = Controller(space, int(hp["controller_hidden"]))  # tiny: it stays on the CPU
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.c_opt = torch.optim.Adam(self.controller.parameters(), lr=hp["controller_lr"])
        self.w_opt = torch.optim.SGD(
            list(objective.params().values()),
            lr=hp["w_lr"],
            momentum=hp["w_momentum"],
            weight_decay=hp["w_weight_decay"],
        )
        self.baseline: float | None = None
        self.done = 0

    def w_lr(self) -> float:
        lo, hi = self.hp["w_lr_min"], self.hp["w_lr"]
        return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * min(self.done, self.steps) / self.steps))

    def step(self, train_ep: Episodes, val_ep: Episodes) -> dict[str, float]:
        for group in self.w_opt.param_groups:
            group["lr"] = self.w_lr()
        params = self.objective.params()
        # the shared weights, with a cell the controller proposes
        with torch.no_grad():
            cell = self.controller.sample(self.generator)[0]
        self.w_opt.zero_grad()
        loss, acc = self.objective(params, chosen(cell), train_ep)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), self.hp["grad_clip"])
        self.w_opt.step()

        # the controller: REINFORCE on another cell's validation accuracy
        cell, logp, entropy, _ = self.controller.sample(self.generator)
        with torch.no_grad():
            reward = float(self.objective(params, chosen(cell), val_ep)[1])
        baseline = reward if self.baseline is None else self.baseline
        c_loss = -(reward - baseline) * logp - self.hp["entropy_weight"] * entropy
        self.c_opt.zero_grad()
        c_loss.backward()
        self.c_opt.step()
        decay = self.hp["baseline_decay"]
        self.baseline = decay * baseline + (1 - decay) * reward
        self.done += 1
        return {"loss": float(loss.detach()), "acc": float(acc), "reward": reward}

    def derive(self, val_eps: list[Episodes]) -> CellChoice:
        with torch.no_grad():
            cells = [self.controller.sample(greedy=True)[0]]
            cells += [self.controller.sample(self.generator)[0] for _ in range(int(self.hp["candidates"]))]
            params = self.objective.params()
            scores = [sum(float(self.objective(params, chosen(c), ep)[1]) for ep in val_eps) for c in cells]
        return cells[max(range(len(cells)), key=lambda k: (scores[k], -k))]  # ties: the most likely, then the first

    def op_probabilities(self) -> list[dict[str, float]]:
        """Per operation decision along the controller's most likely cell, the distribution over operations."""
        with torch.no_grad():
            return self.controller.sample(greedy=True)[3]

    def summary(self) -> dict[str, Any]:
        rounded = [{op: round(p, 4) for op, p in d.items()} for d in self.op_probabilities()]
        return {"op_probabilities": rounded, "baseline": self.baseline}

    def state_dict(self) -> dict[str, Any]:
        return {
            "controller": self.controller.state_dict(),
            "c_opt": self.c_opt.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": self.baseline,
            "done": self.done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.c_opt.load_state_dict(state["c_opt"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.done = int(state["done"])
