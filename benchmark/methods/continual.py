"""The contract of continual learners (the continual setting's stream and task-sequence protocols).

A `ContinualLearner` lives two lives:

1. **Pre-training** on the protocol's first stage (Omniglot's background alphabets), like any method: the
   harness calls `training_step(batch, batch_idx)` with batches of the kind the method declares in
   `pretraining`: "batches", `(x [B, C, H, W], y [B])` drawn i.i.d. over the background classes (plain
   pre-training: seq-finetune, joint, er, mer, la-maml), or "trajectories", a `Trajectory` (OML, ANML).
   Labels are background class ids 0..task.n_train_classes-1. The checkpoint is written after this.
2. **Learning continually** from the pre-trained state, once per stream (or task sequence), each one
   starting again from the same checkpoint: `begin_continual()`, then `observe(x, y, seen)` for each
   incoming batch in the protocol's fixed order, `consolidate()` before each scoring point, and
   `classify(x)` to be scored. Continual class ids are 0..task.ways-1 in the order they arrive, so the
   classes seen so far are exactly 0..seen-1 and a learner's output units beyond `seen` are never scored.

The harness keeps the module in eval mode for the whole second life (batch-norm uses its pre-training
statistics: an online batch may hold a single image) with gradients on during `observe`, seeds torch from
(training seed, stream) before each stream (so replay draws are reproducible and `bench verify` replays a
stream exactly), and never hands `observe` an image it later scores as a test image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..protocols import Protocol
from .backbones import make_backbone
from .contract import MetaLearner
from .domains import EPISODIC_ONLY

TRAJECTORY_ONLY = ("traj_classes", "traj_images", "remember")


@dataclass
class Trajectory:
    """One meta-training sample of the meta-continual learners (OML, ANML): `inner` images of a few classes,
    learned one update at a time in the inner loop, and `outer` images to score the updated learner on: the
    inner images followed by a random "remember" batch over all training classes (Javed & White 2019;
    Beaulieu et al. 2020)."""

    inner_x: torch.Tensor  # [k, C, H, W]
    inner_y: torch.Tensor  # [k]
    outer_x: torch.Tensor  # [m, C, H, W]
    outer_y: torch.Tensor  # [m]

    def to(self, device) -> Trajectory:
        return Trajectory(*(t.to(device) for t in (self.inner_x, self.inner_y, self.outer_x, self.outer_y)))


def seen_logits(logits: torch.Tensor, seen: int) -> torch.Tensor:
    """The output units of the classes seen so far (0..seen-1): what losses and predictions may use."""
    return logits[:, :seen]


class ContinualLearner(MetaLearner):
    """A representation (`features`, the backbone) and a prediction head over the continual classes (`head`),
    plus a head over the pre-training classes (`pretrain_head`) for the methods that pre-train plainly.
    Subclasses implement `observe` and, for trajectories, `training_step`."""

    training_data: ClassVar[str] = "continual"
    stream_seed: torch.Tensor
    pretraining: ClassVar[str] = "batches"  # or "trajectories"
    HPARAMS: ClassVar[dict[str, Any]] = {
        "lr": 1e-3,  # pre-training (Adam)
        "batch_size": 64,  # pre-training batches; images per online update come from the protocol
        "online_lr": 0.03,  # SGD step size of the online updates
        "online_steps": 1,  # SGD steps per incoming batch
        "traj_classes": 1,  # classes per trajectory's inner loop (trajectory methods)
        "traj_images": 20,  # inner images per trajectory
        "remember": 64,  # random images of all training classes in each trajectory's outer batch
        "eval_batch": 256,  # images per forward pass when scoring
    }
    HPARAM_BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "batch_size": (1, None),
        "online_steps": (0, None),
        "traj_classes": (1, None),
        "traj_images": (1, None),
        "remember": (0, None),
    }

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.features = make_backbone(self.hp["backbone"], task.channels, task.image_size)
        self.head: nn.Module = nn.Linear(self.features.out_dim, task.ways)
        self.pretrain_head: nn.Module = nn.Linear(self.features.out_dim, task.n_train_classes)
        # the seed each stream's randomness derives from: set by the harness, saved with the weights, so
        # `bench verify` replays a stream with the replay draws the run made
        self.register_buffer("stream_seed", torch.zeros((), dtype=torch.long))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        # episode shapes mean nothing here, and trajectory shapes nothing to a learner that pre-trains plainly
        unused = EPISODIC_ONLY + (TRAJECTORY_ONLY if cls.pretraining == "batches" else ())
        return {k: v for k, v in super().defaults().items() if k not in unused}

    @classmethod
    def supports(cls, protocol: Protocol) -> str | None:
        if protocol.continual is None or protocol.continual.kind == "meta-sequence":
            return (
                f"{cls.name} learns continually from a stream of images; {protocol.name} is not a stream or "
                f"task-sequence protocol (the meta-sequence protocol runs the few-shot methods)"
            )
        return None

    # --- pre-training ------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        """Plain pre-training: cross-entropy over the background classes."""
        x, y = batch
        logits = self.pretrain_head(self.features(x))
        loss = F.cross_entropy(logits, y)
        self.log_dict(
            {"loss": loss.detach(), "acc": (logits.argmax(-1) == y).float().mean()}, prog_bar=True, on_step=True
        )
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hp["lr"])

    # --- learning continually ----------------------------------------------------------------------------
    def begin_continual(self) -> None:
        """Called once at the start of every stream, after the pre-trained weights are loaded. The default
        starts the continual head afresh (zero weights: no class is preferred before it is seen)."""
        with torch.no_grad():
            for p in self.head.parameters():
                p.zero_()

    def observe(self, x: torch.Tensor, y: torch.Tensor, seen: int) -> None:
        """Learn from one incoming batch: images [b, C, H, W] (normalised), continual class ids y [b] < seen."""
        raise NotImplementedError

    def consolidate(self) -> None:
        """Called before each scoring point (e.g. the joint upper bound trains on everything seen here)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over every continual class [n, task.ways]; the harness scores only the units it allows."""
        return self(x)

    def predict(self, support_x, support_y, query_x, ways):
        raise TypeError(f"{self.name} learns from a stream (observe/classify); it does not answer episodes")

    # --- shared by the online learners ---------------------------------------------------------------------
    def online_parameters(self) -> list[nn.Parameter]:
        """What the plain online updates change: the whole network but the unused pre-training head."""
        skip = {id(p) for p in self.pretrain_head.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def sgd_steps(self, x: torch.Tensor, y: torch.Tensor, seen: int, params: list[nn.Parameter] | None = None) -> None:
        """`online_steps` plain SGD steps at `online_lr` on the cross-entropy over the seen classes."""
        params = self.online_parameters() if params is None else params
        with torch.enable_grad():
            for _ in range(int(self.hp["online_steps"])):
                loss = F.cross_entropy(seen_logits(self(x), seen), y)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                with torch.no_grad():
                    for p, g in zip(params, grads):
                        if g is not None:
                            p.sub_(self.hp["online_lr"] * g)
