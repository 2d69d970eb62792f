"""A meta-learned augmentation policy for the support set, on Prototypical Networks (Snell et al. 2017).

Every episode's support set grows by `copies` augmented versions of each image, made by a policy of seven
differentiable operations (benchmark.methods.augment: rotate, shear, translate, scale/crop, brightness,
contrast, cutout), each with a magnitude and a probability; a class's prototype is the mean embedding of its
shots and their copies, and queries are classified by distance to the prototypes as in ProtoNet. Training
back-propagates the query loss through the augmented supports into the backbone (as ProtoNet does) and into the
policy (with its own learning rate, `policy_lr`): into each magnitude through the sampling grid, the colour
shifts and the cutout mask, and into each probability through a relaxed Bernoulli gate. The policy shapes how
the learner adapts to an episode (its prototypes) and is judged by the query loss after that adaptation: a
meta-gradient, and an exact one, because ProtoNet's adaptation is closed-form (no unrolled inner step).
At test time the support set is expanded the same way with hard Bernoulli gates and draws seeded by a hash of
the episode's support images and labels: an episode always gets the same copies, whatever else shares its batch,
and the queries play no part in them.

`policy=learned` (the default) starts from the hand-set values and learns them; `policy=fixed` keeps them
(magnitude 0.5: half of each operation's range, e.g. +/-15 degrees of rotation; probability 0.5) and has no
policy parameters: the hand-set comparison, registered too as `meta-augment-fixed` so that the leaderboard (one
record per method and backbone) shows it beside the learned one. `protonet` is the no-augmentation reference
(the same network, loss, optimiser and schedule).

Papers. This follows DADA (Li et al., Differentiable Automatic Data Augmentation, ECCV 2020) in what is learned
and how it is judged: a dataset-level policy of operations with probabilities and magnitudes, learned by
gradient descent on held-out loss (DADA's validation set; here each episode's queries) in one pass with the
network. It takes from Faster AutoAugment (Hataya et al., ECCV 2020) the relaxed Bernoulli gate for each
probability and operations differentiable in their magnitudes. It differs from both: a few-shot episodic
learner whose policy also expands the support set at test time; seven operations in a fixed order, all
present (no sub-policy selection by Gumbel-softmax); an exact gradient through ProtoNet's closed-form adaptation
rather than DADA's one-step unrolled approximation (with RELAX) or Faster AutoAugment's distribution-matching
(adversarial critic) objective; no search-then-retrain stage. MetaAugment (Zhou et al., Sample-Aware Data
Augmentation Policy Learning, AAAI 2021) meta-learns per-sample weights of augmented images' losses instead,
and Rajendran et al. (Meta-Learning Requires Meta-Augmentation, NeurIPS 2020) augment tasks (labels), not
images. None of them reports these protocols, so there are no paper numbers beside this method.

Where the learned policy is: in each run of the record, `runs[].method_extra` (`record_extra`, read after model
selection: the policy of the model scored), and in the run's checkpoint (`runs[].checkpoint`, relative to the
results folder): `python -m benchmark.methods.augment CHECKPOINT...` prints each operation's magnitude,
probability and strength as JSON.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np
import torch

from benchmark.methods import HParamError, LogUniform, PaperResult, Recipe, register
from benchmark.methods.augment import OPS, AugmentPolicy, Draws, draw, parse_ops

from .protonet import ProtoNet

_OURS = "this project's set-up: no paper ran this method on these protocols"
_WHERE = (
    " The learned policy is in each run's checkpoint (runs[].checkpoint): `python -m benchmark.methods.augment "
    "CHECKPOINT` prints it."
)


@register
class MetaAugment(ProtoNet):
    name = "meta-augment"
    paper = (
        "a meta-learned support-set augmentation policy on Prototypical Networks, after Li et al., DADA: "
        "Differentiable Automatic Data Augmentation, ECCV 2020, and Hataya et al., Faster AutoAugment, ECCV 2020"
    )
    HPARAMS = {
        **ProtoNet.HPARAMS,
        "policy": "learned",  # "fixed": the hand-set magnitudes and probabilities, nothing learned
        "copies": 4,  # augmented versions of each support image
        "ops": ",".join(OPS),
        "magnitude": 0.5,  # hand-set (and the learned policy's starting) magnitude, a fraction of each op's range
        "probability": 0.5,  # hand-set (and starting) probability of each operation
        # Adam's rate for the policy's logits (the backbone keeps `lr`). On Caltech-101 (16-filter Conv-4, 2-core
        # CPU) 1e-2 moved the policy the same way as 5e-2, a third as far in 300 steps (cutout 0.50 -> 0.69 against
        # 0.93 in 200): too slow for the few hundred steps a CPU budget buys
        "policy_lr": 5e-2,
        "temperature": 0.1,  # of the relaxed Bernoulli gates in training
        "eval_batch": 10,  # an episode embeds (1 + copies) x its support: fewer episodes per pass (memory only)
    }
    HPARAM_BOUNDS = {"copies": (1, None), "magnitude": (0.0, 1.0), "probability": (0.0, 1.0)}
    SEARCH_SPACE = {**ProtoNet.SEARCH_SPACE, "policy_lr": LogUniform(1e-3, 1e-1)}
    # mypy takes protonet's RECIPES, unannotated, to be a tuple of exactly three
    RECIPES: ClassVar[tuple[Recipe, ...]] = (  # type: ignore[assignment]
        Recipe(
            "omniglot",
            {"train_ways": 60, "train_queries": 5, "distance": "euclidean"},
            source="protonet:omniglot (Snell et al. 2017, Sec. 3.1), with the support set augmented; " + _OURS,
            note="ProtoNet's Omniglot recipe, so that the comparison with protonet differs only in the "
            "augmentation. Brightness and contrast act on grey images too (no hue or saturation operation); "
            "rotation stays within +/-30 degrees, well short of the 90-degree turns that are classes of their "
            "own here. A 60-way 1-shot step embeds 60 + 240 copies + 300 queries: about 1.7x protonet's cost." + _WHERE,
        ),
        Recipe(
            "caltech101",
            {"copies": 4},
            source=_OURS,
            note="ProtoNet's defaults (5-way training episodes, 15 queries, Adam 1e-3 halved every 2,000 steps: "
            "protonet has no Caltech-101 recipe), so the comparison with protonet differs only in the augmentation; "
            "4 copies per support image; the Caltech-101 -> PACS protocols share this training run." + _WHERE,
        ),
    )
    # the papers report CIFAR, SVHN and ImageNet classification, none of these protocols
    PAPER_RESULTS: ClassVar[dict[str, PaperResult]] = {}

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.policy = AugmentPolicy(
            parse_ops(self.hp["ops"]),
            self.hp["magnitude"],
            self.hp["probability"],
            learned=self.hp.get("policy") == "learned",
            temperature=self.hp.get("temperature", 1.0),  # meta-augment-fixed has none: it never relaxes a gate
        )

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if hp.get("policy", "fixed") not in ("learned", "fixed"):
            raise HParamError(f"{cls.name}: policy={hp['policy']!r} is not one of learned, fixed")
        try:
            parse_ops(hp["ops"])
        except ValueError as e:
            raise HParamError(f"{cls.name}: {e}") from None
        if not hp.get("temperature", 1.0) > 0:
            raise HParamError(f"{cls.name}: temperature={hp['temperature']} must be positive")
        for key in ("magnitude", "probability"):
            if hp.get("policy") == "learned" and not 0 < hp[key] < 1:
                raise HParamError(
                    f"{cls.name}: {key}={hp[key]}: a learned policy starts strictly inside (0, 1) (its logit); "
                    f"use policy=fixed for 0 or 1"
                )
        return hp

    def draws(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Draws:
        """The random numbers of every copy: in training fresh from torch's global generator (seeded by the run's
        seed); otherwise from a generator per episode seeded by its support set alone."""
        b, s = support_y.shape
        n = s * self.hp["copies"]
        if self.training:
            return draw(b * n)
        return Draws.cat([draw(n, torch.Generator().manual_seed(k)) for k in support_seeds(support_x, support_y)])

    def expand(
        self, support_x: torch.Tensor, support_y: torch.Tensor, draws: Draws | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The support set followed by `copies` augmented versions of each image (image-major: image i's copies
        are rows S + i*copies ...), and their labels: [B, S*(1+copies), C, H, W], [B, S*(1+copies)]."""
        b, s = support_y.shape
        c, shape = self.hp["copies"], support_x.shape[2:]
        draws = self.draws(support_x, support_y) if draws is None else draws
        x = support_x.unsqueeze(2).expand(b, s, c, *shape).reshape(b * s * c, *shape)
        relaxed = self.policy.learned and self.training  # a fixed policy has nothing to relax for
        copies = self.policy(x, draws, hard=not relaxed).view(b, s * c, *shape)
        return torch.cat([support_x, copies], 1), torch.cat([support_y, support_y.repeat_interleave(c, 1)], 1)

    def predict(self, support_x, support_y, query_x, ways):
        sx, sy = self.expand(support_x, support_y)
        return super().predict(sx, sy, query_x, ways)

    def training_step(self, ep, batch_idx):
        loss = super().training_step(ep, batch_idx)
        if self.policy.learned:  # the policy's course, for --logger
            m, p = self.policy.magnitudes().detach(), self.policy.probabilities().detach()
            self.log_dict({f"{op}/{k}": v[j] for j, op in enumerate(self.policy.ops) for k, v in (("m", m), ("p", p))})
        return loss

    def configure_optimizers(self):
        groups: list[dict[str, Any]] = [{"params": list(self.encoder.parameters()), "lr": self.hp["lr"]}]
        if self.policy.learned:  # its own rate; Adam's state is per parameter, so a group is its own optimiser
            groups.append({"params": list(self.policy.parameters()), "lr": self.hp["policy_lr"]})
        opt = torch.optim.Adam(groups)
        sched = torch.optim.lr_scheduler.StepLR(opt, self.hp["lr_step"], self.hp["lr_gamma"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def record_extra(self) -> dict[str, Any]:
        """The policy, for the record's `runs[].method_extra` (read after model selection: the scored model's):
        {policy, copies, ops: {op: {magnitude, probability, strength, unit}}}."""
        kind = "learned" if self.policy.learned else "fixed"
        return {"policy": kind, "copies": self.hp["copies"], "ops": self.policy.values()}


@register
class MetaAugmentFixed(MetaAugment):
    """meta-augment's operations at the hand-set magnitudes and probabilities, nothing learned. The same as
    `meta-augment --hparam policy=fixed`, under a name of its own because the leaderboard keeps one record per
    method and backbone (a newer record supersedes an older one): so the page shows the two side by side."""

    name = "meta-augment-fixed"
    paper = (
        "meta-augment's support-set augmentation at hand-set magnitudes and probabilities (nothing learned): "
        "its fixed-policy comparison"
    )
    HPARAMS = {k: v for k, v in MetaAugment.HPARAMS.items() if k not in ("policy", "policy_lr", "temperature")}
    SEARCH_SPACE = ProtoNet.SEARCH_SPACE


def support_seeds(support_x: torch.Tensor, support_y: torch.Tensor) -> list[int]:
    """One generator seed per episode: a hash of its support images (rounded to 1/64 of a standard deviation, so
    that a last-bit difference in normalising them does not change the draws) and labels."""
    q = torch.round(support_x.detach().float() * 64).to(torch.int32).cpu().numpy()
    y = support_y.detach().cpu().numpy().astype(np.int64)
    digests = (hashlib.blake2b(q[i].tobytes() + y[i].tobytes(), digest_size=8).digest() for i in range(len(q)))
    return [int.from_bytes(d, "little") >> 1 for d in digests]
