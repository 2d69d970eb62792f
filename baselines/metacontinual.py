"""What the meta-continual learners (OML, ANML) share: a prediction network (PLN) learned online, one SGD
step per image, from what a meta-learned fixed part computes, and the second-order meta-training of both.

A method splits its weights in two. The fixed part (`embed`: OML's representation network, ANML's
neuromodulatory network) is computed once per image and never changes online; the PLN (`pln_logits`: the
modules named in `PLN_BODY`, then an output layer) is what the inner loop and the online updates adapt.
The output layer is `pretrain_head` over the background classes in meta-training and `head` over the
continual classes at test (they differ in size, so no layer can be both).

Meta-training (`training_step` on a `Trajectory`): the output rows of the trajectory's classes are
re-initialised, as at test before a class arrives (both references do this, "so the learner cannot
memorise the data"); the PLN's fast weights take one SGD step at `inner_lr` per `inner_batch` inner
images, in order, written functionally (`torch.func.functional_call` and `torch.func.grad`) so the
outer loss on the trajectory's outer images (its inner images and the remember batch) differentiates
through every step, second order (both public codes shipped first order by mistake: no `create_graph`;
`first_order=true` reproduces that). Adam at `lr` then updates the fixed part and the PLN's initial
weights.

At test `begin_continual` re-initialises the continual output layer and `observe` takes `online_steps`
SGD steps at `online_lr` on the PLN alone, on the seen classes' units.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from benchmark.methods import HParamError
from benchmark.methods.continual import ContinualLearner, Trajectory, seen_logits

Params = dict[str, torch.Tensor]
Embedded = tuple[torch.Tensor, ...]  # what the fixed part computed, one row per image in each tensor

RESETS = ("zero", "kaiming")


def as_percent(curve: dict[int, float]) -> tuple[tuple[int, float], ...]:
    """A stream curve of fractions as PaperResult.curve: (classes seen, percent) pairs."""
    return tuple((int(c), 100 * a) for c, a in sorted(curve.items()))


class MetaContinualLearner(ContinualLearner):
    """Not registered: OML and ANML subclass it and define `PLN_BODY`, `embed` and `pln_logits`."""

    pretraining: ClassVar[str] = "trajectories"
    PLN_BODY: ClassVar[tuple[str, ...]] = ()  # the submodules before the output layer that learn online
    HPARAMS: ClassVar[dict[str, Any]] = {
        **ContinualLearner.HPARAMS,
        "lr": 1e-4,  # the meta-learning rate (Adam, outer loop)
        "inner_lr": 0.03,  # SGD step of the inner loop in meta-training
        "inner_batch": 1,  # inner images per inner step (both references: 1)
        "first_order": False,  # true: the inner gradients are constants (the references' public code)
        # how a class's output unit starts before it is learned: "zero" (no preference among the seen
        # classes) or "kaiming" (the references: He-normal weights, zero bias)
        "reset": "zero",
    }
    HPARAM_BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        **ContinualLearner.HPARAM_BOUNDS,
        "inner_batch": (1, None),
    }

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if hp["reset"] not in RESETS:
            raise HParamError(f"{cls.name}: reset={hp['reset']!r} is not one of {', '.join(RESETS)}")
        return hp

    # --- what a method defines ---------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> Embedded:
        """What the fixed part computes from images (the PLN's inputs); it does not change online."""
        raise NotImplementedError

    def pln_logits(self, fast: Params, h: Embedded, continual: bool) -> torch.Tensor:
        """The PLN's logits on the weights in `fast` (full names; any other weight is the module's own), over
        the continual classes or, with continual=False, the background classes."""
        raise NotImplementedError

    # --- the shared machinery ----------------------------------------------------------------------------
    def run(self, name: str, fast: Params, *args: Any) -> torch.Tensor:
        """Submodule `name` on the weights of it that `fast` holds, its own for the rest."""
        module = self.get_submodule(name)
        prefix = name + "."
        mine = {k[len(prefix) :]: v for k, v in fast.items() if k.startswith(prefix)}
        return functional_call(module, mine, args) if mine else module(*args)

    def output_name(self, continual: bool) -> str:
        return "head" if continual else "pretrain_head"

    def fast_params(self, continual: bool) -> Params:
        """The PLN's weights (the ones that learn online), by full name: the body and the output layer."""
        prefixes = tuple(f"{m}." for m in (*self.PLN_BODY, self.output_name(continual)))
        return {n: p for n, p in self.named_parameters() if n.startswith(prefixes)}

    def online_parameters(self) -> list[nn.Parameter]:
        names = self.fast_params(continual=True).keys()
        return [p for n, p in self.named_parameters() if n in names]

    def output_layer(self, continual: bool) -> nn.Linear:
        layer = self.get_submodule(self.output_name(continual))
        assert isinstance(layer, nn.Linear), f"{self.name}'s output layer is a {type(layer).__name__}, not a Linear"
        return layer

    def reset_rows(self, layer: nn.Linear, rows: torch.Tensor | None = None) -> None:
        """Re-initialise the output units `rows` (all when None) of a linear layer, per `reset`."""
        weight, bias = layer.weight, layer.bias
        rows = torch.arange(weight.shape[0], device=weight.device) if rows is None else rows
        with torch.no_grad():
            if self.hp["reset"] == "kaiming":
                fan_in = weight.shape[1]
                noise = torch.randn(len(rows), fan_in, device=weight.device, dtype=weight.dtype)
                weight[rows] = noise * math.sqrt(2.0 / fan_in)
            else:
                weight[rows] = 0.0
            if bias is not None:
                bias[rows] = 0.0

    def adapt(self, fast: Params, h: Embedded, y: torch.Tensor, create_graph: bool) -> Params:
        """The inner loop on background classes: one SGD step at `inner_lr` per `inner_batch` rows of (h, y), in
        order."""
        lr, b = self.hp["inner_lr"], int(self.hp["inner_batch"])
        for i in range(0, len(y), b):
            hi, yi = tuple(t[i : i + b] for t in h), y[i : i + b]

            def loss(p: Params, hi: Embedded = hi, yi: torch.Tensor = yi) -> torch.Tensor:
                return F.cross_entropy(self.pln_logits(p, hi, continual=False), yi)

            g = grad(loss)(fast)
            if not create_graph:
                g = {k: v.detach() for k, v in g.items()}
            fast = {k: p - lr * g[k] for k, p in fast.items()}
        return fast

    def meta_loss(self, traj: Trajectory, first_order: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(outer loss, outer logits) of one trajectory: the inner loop from the PLN's initial weights on the
        inner images, then the cross-entropy of the adapted PLN on the outer images. Resets nothing."""
        first_order = self.hp["first_order"] if first_order is None else first_order
        k = len(traj.inner_y)
        # the fixed part does not change in the inner loop: one pass over every image of the trajectory
        h = self.embed(torch.cat([traj.inner_x, traj.outer_x]))
        fast = self.adapt(self.fast_params(False), tuple(t[:k] for t in h), traj.inner_y, not first_order)
        logits = self.pln_logits(fast, tuple(t[k:] for t in h), continual=False)
        return F.cross_entropy(logits, traj.outer_y), logits

    def training_step(self, batch: Trajectory, batch_idx):
        self.reset_rows(self.output_layer(False), torch.unique(batch.inner_y))
        loss, logits = self.meta_loss(batch)
        acc = (logits.argmax(-1) == batch.outer_y).float().mean()
        self.log_dict({"loss": loss.detach(), "acc": acc}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        # the continual head takes no part in meta-training
        meta = [p for n, p in self.named_parameters() if not n.startswith(f"{self.output_name(True)}.")]
        return torch.optim.Adam(meta, lr=self.hp["lr"])

    # --- learning continually ----------------------------------------------------------------------------
    def begin_continual(self) -> None:
        self.reset_rows(self.output_layer(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pln_logits({}, self.embed(x), continual=True)

    def observe(self, x: torch.Tensor, y: torch.Tensor, seen: int) -> None:
        with torch.no_grad():
            h = self.embed(x)  # the fixed part is frozen online
        params = self.online_parameters()
        with torch.enable_grad():
            for _ in range(int(self.hp["online_steps"])):
                loss = F.cross_entropy(seen_logits(self.pln_logits({}, h, continual=True), seen), y)
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    for p, g in zip(params, grads):
                        p.sub_(self.hp["online_lr"] * g)
