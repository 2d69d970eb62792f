"""What the replay learners (er, mer, la-maml) share: a reservoir buffer, replay draws, and SGD steps on the
weights in place or on a functional copy of them.

Every random draw uses the global torch generator (on the CPU), which the harness seeds before each stream, so a
stream's replay is reproducible. The buffer lives on the device of the images it is given, and is not part of the
state dict: it belongs to one stream, and every stream starts from the same pre-trained checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from benchmark.methods.continual import ContinualLearner, seen_logits

Params = dict[str, torch.Tensor]


class Reservoir:
    """A fixed-size uniform sample of every example offered so far (Vitter's algorithm R): the first `size`
    examples are kept as they come; the n-th after them replaces a uniformly drawn slot with probability size/n,
    so at any time each of the n examples offered is in the buffer with probability size/n."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a reservoir holds at least one example (got size={size})")
        self.size = size
        self.offered = 0
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None

    def __len__(self) -> int:
        return min(self.offered, self.size)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Offer a batch of examples (x [b, ...], y [b]), in order."""
        b = len(x)
        if self.x is None or self.y is None:
            self.x = x.new_empty((self.size, *x.shape[1:]))
            self.y = y.new_empty((self.size, *y.shape[1:]))
        start = self.offered
        self.offered += b
        slots = list(range(start, min(start + b, self.size)))  # the first `size` examples fill the buffer in order
        late = b - len(slots)
        if late:
            # the n-th example takes slot floor(u * n), uniform on 0..n-1, and stays only if that is < size;
            # float64 keeps the bias of the floor far below anything a stream can measure
            n = torch.arange(start + b - late + 1, start + b + 1, dtype=torch.float64)
            slots += (torch.rand(late, dtype=torch.float64) * n).long().tolist()
        # a later example of the batch wins a slot drawn twice, as if they had been offered one at a time
        last = {s: i for i, s in enumerate(slots) if s < self.size}
        if last:
            dst = torch.tensor(list(last.keys()), device=self.x.device)
            src = torch.tensor(list(last.values()), device=x.device)
            self.x[dst] = x.detach()[src]
            self.y[dst] = y.detach()[src]

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """min(k, len) distinct stored examples drawn uniformly, or None when the buffer is empty or k is 0."""
        n = len(self)
        if n == 0 or k <= 0 or self.x is None or self.y is None:
            return None
        idx = torch.randperm(n)[:k].to(self.x.device)
        return self.x[idx], self.y[idx]


def with_replay(
    x: torch.Tensor, y: torch.Tensor, drawn: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The incoming batch followed by the replayed examples (if any)."""
    if drawn is None:
        return x, y
    return torch.cat([x, drawn[0]]), torch.cat([y, drawn[1]])


class ReplayLearner(ContinualLearner):
    """A continual learner with a reservoir buffer (not registered): `buffer_size` examples, `replay_batch` of them
    drawn per update. The defaults are those of the MER and La-MAML papers' 200-memory runs and ER's batch of 10."""

    HPARAMS: ClassVar[dict[str, Any]] = {**ContinualLearner.HPARAMS, "buffer_size": 200, "replay_batch": 10}
    HPARAM_BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        **ContinualLearner.HPARAM_BOUNDS,
        "buffer_size": (1, None),
        "replay_batch": (0, None),
    }

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.buffer = Reservoir(int(self.hp["buffer_size"]))

    def begin_continual(self) -> None:
        super().begin_continual()
        self.buffer = Reservoir(int(self.hp["buffer_size"]))

    def replay(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.buffer.sample(int(self.hp["replay_batch"]))


def seen_loss(logits: torch.Tensor, y: torch.Tensor, seen: int) -> torch.Tensor:
    """Cross-entropy over the classes seen so far."""
    return F.cross_entropy(seen_logits(logits, seen), y)


def sgd_step(
    learner: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor, seen: int, lr: float
) -> None:
    """One SGD step, in place, on the cross-entropy of (x, y) over the seen classes."""
    with torch.enable_grad():
        loss = seen_loss(learner(x), y, seen)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p.sub_(lr * g)


def functional_loss(learner: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, seen: int) -> torch.Tensor:
    """The cross-entropy over the seen classes of the learner run on `params` (the weights it does not name are
    its own)."""
    return seen_loss(functional_call(learner, params, (x,)), y, seen)


def functional_sgd_step(
    learner: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    seen: int,
    lr: Params,
    create_graph: bool,
    clamp: float = 0.0,
) -> Params:
    """One SGD step on a functional copy of the weights, with a step size per weight (`lr`, tensors shaped like
    the weights): the new weights stay differentiable in `lr`, and in `params` through the gradient itself when
    `create_graph` (second order). clamp > 0 clips each gradient element to [-clamp, clamp]."""
    loss = functional_loss(learner, params, x, y, seen)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, allow_unused=True)
    out = {}
    for (name, p), g in zip(params.items(), grads):
        if g is None:
            out[name] = p
            continue
        if clamp > 0:
            g = g.clamp(-clamp, clamp)
        out[name] = p - lr[name] * g
    return out
