"""Joint training: the upper bound of continual learning, i.i.d. training over every image seen so far.

Pre-trains plainly, then `observe` only stores each incoming batch (on the model's device) and `consolidate`,
before each scoring point, trains on everything stored: `joint_epochs` epochs of shuffled mini-batches of
`joint_batch` images, SGD at `online_lr` on the cross-entropy over the classes seen so far.

Each consolidation starts again from the pre-trained weights (with the continual head zeroed), kept at
`begin_continual`, rather than going on from the previous consolidation: so the model scored after c classes is
the i.i.d. fit to those c classes and nothing else, independent of the order and number of earlier scoring points
(the i.i.d. "oracle" reference of the meta-continual papers, re-fitted at each point). No paper fixes the budget;
10 epochs of batches of 10 at the online step size is this project's choice (the online learners' step size and
batch, over i.i.d. epochs), not tuned. A consolidation costs joint_epochs passes over everything seen, so the
re-fits of a stream cost the sum over its scoring points (on the OML stream 10 x (150 + 750 + 1,500 + 3,000 +
9,000) images).
"""

from __future__ import annotations

import torch

from benchmark.methods import register
from benchmark.methods.continual import ContinualLearner

from .replay import sgd_step


@register
class Joint(ContinualLearner):
    name = "joint"
    paper = "Joint (i.i.d.) training on all data seen so far (the upper bound of continual learning)"
    HPARAMS = {**ContinualLearner.HPARAMS, "joint_epochs": 10, "joint_batch": 10}
    HPARAM_BOUNDS = {**ContinualLearner.HPARAM_BOUNDS, "joint_epochs": (1, None), "joint_batch": (1, None)}

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self._stored: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._start: list[torch.Tensor] = []
        self._seen = 0

    @classmethod
    def defaults(cls):
        # the epochs over everything stored replace the per-batch steps
        return {k: v for k, v in super().defaults().items() if k != "online_steps"}

    def begin_continual(self) -> None:
        super().begin_continual()
        self._stored, self._seen = [], 0
        self._start = [p.detach().clone() for p in self.online_parameters()]

    def observe(self, x, y, seen):
        self._stored.append((x.detach().clone(), y.detach().clone()))
        self._seen = max(self._seen, int(seen))

    def consolidate(self) -> None:
        if not self._stored:
            return
        if not self._start:
            raise RuntimeError("joint: call begin_continual() before the stream, to keep the weights it restarts from")
        params = self.online_parameters()
        with torch.no_grad():
            for p, p0 in zip(params, self._start):
                p.copy_(p0)
        x = torch.cat([b[0] for b in self._stored])
        y = torch.cat([b[1] for b in self._stored])
        size = int(self.hp["joint_batch"])
        for _ in range(int(self.hp["joint_epochs"])):
            order = torch.randperm(len(x)).to(x.device)
            for idx in order.split(size):
                sgd_step(self, params, x[idx], y[idx], self._seen, self.hp["online_lr"])
