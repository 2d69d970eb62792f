"""What the black-box meta-learners (mann, snail) share: the support set read as a sequence of tokens.

A token is an image's embedding (the backbone's features) followed by a label code of `max_ways`
slots: the one-hot label for a support image, all zeros (the null label) for a query. Query labels
never enter a token, in training or at test; the tokens are built from the images and the support
labels only (`tokens`), and `training_step` uses the query labels for the loss alone. Each method
answers every query from the support tokens and that query's own token, never from other queries
(one sequence of support then query per query, computed without repeating the support part), and
one episode's answer never depends on the other episodes of its batch (in eval mode the backbone's
batch norm uses its running statistics).

The label code's width is fixed when the model is built: `max_ways` (0: the larger of the protocol's
ways and `train_ways`). A protocol or a training episode with more ways is refused before any data is
loaded (`training_episodes`), when the model is built, and by `predict`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from benchmark.methods import COMMON_HPARAMS, HParamError, MetaLearner, TaskInfo, make_backbone


def label_codes(labels: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """Support labels [...] -> one-hot codes [..., width]."""
    return F.one_hot(labels, width).to(dtype)


def support_tokens(features: torch.Tensor, labels: torch.Tensor, width: int) -> torch.Tensor:
    """[B, S, D] support features and [B, S] labels -> [B, S, D + width] tokens (features, one-hot label)."""
    return torch.cat([features, label_codes(labels, width, features.dtype)], dim=-1)


def query_tokens(features: torch.Tensor, width: int) -> torch.Tensor:
    """[B, Q, D] query features -> [B, Q, D + width] tokens with the null label (all zeros)."""
    return torch.cat([features, features.new_zeros(*features.shape[:-1], width)], dim=-1)


def label_width(hp: dict[str, Any], task: TaskInfo, name: str) -> int:
    """The label code's width for a model built for `task`: max_ways, or (0) the ways it will see."""
    need = max(task.ways, hp["train_ways"])
    if hp["max_ways"] and need > hp["max_ways"]:
        raise HParamError(
            f"{name}: max_ways={hp['max_ways']} but this model must label {need}-way episodes "
            f"(the protocol's {task.ways} ways, train_ways={hp['train_ways']}); raise max_ways or leave it 0"
        )
    return hp["max_ways"] or need


class SequenceLearner(MetaLearner):
    """A method that reads (embedding, label) tokens: not registered; mann and snail subclass it.

    A subclass builds its sequence model in `__init__` and implements `answer(support, queries)`:
    [B, S, T] support tokens and [B, Q, T] query tokens -> ([B, Q, max_ways] query logits, and
    [B, S, max_ways] logits predicting each support label from the tokens before it, or None).
    """

    shuffled_support: ClassVar[bool] = True  # the harness hands the support set over in a fixed shuffled order

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {**COMMON_HPARAMS, "max_ways": 0, **cls.HPARAMS}

    @classmethod
    def resolve_hparams(cls, overrides):
        hp = super().resolve_hparams(overrides)
        if hp["max_ways"] == 1 or hp["max_ways"] < 0:
            raise HParamError(f"{cls.name}: max_ways={hp['max_ways']} must be 0 (the protocol's ways) or at least 2")
        return hp

    @classmethod
    def training_episodes(cls, hp, protocol):
        spec = super().training_episodes(hp, protocol)
        cap = hp["max_ways"]
        if cap and max(spec.ways, protocol.episode_spec.ways) > cap:
            raise HParamError(
                f"{cls.name}: its label code has max_ways={cap} slots, but {protocol.name} needs "
                f"{max(spec.ways, protocol.episode_spec.ways)} ways; raise max_ways or leave it 0 (the protocol's ways)"
            )
        return spec

    def __init__(self, task, **hp):
        super().__init__(task, **hp)
        self.max_ways = label_width(self.hp, task, self.name)
        self.encoder = make_backbone(self.hp["backbone"], task.channels, task.image_size)

    @property
    def token_dim(self) -> int:
        return int(self.encoder.out_dim) + self.max_ways

    def tokens(self, support_x, support_y, query_x) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequence model's input: support tokens [B, S, D + max_ways] and query tokens [B, Q, D + max_ways].
        Support and queries are embedded in one pass (in training, batch norm normalises them together)."""
        b, s = support_x.shape[:2]
        z = self.encoder(torch.cat([support_x, query_x], dim=1).flatten(0, 1)).view(b, -1, self.encoder.out_dim)
        return support_tokens(z[:, :s], support_y, self.max_ways), query_tokens(z[:, s:], self.max_ways)

    def answer(self, support: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _check_ways(self, ways: int) -> None:
        if ways > self.max_ways:
            raise HParamError(
                f"{self.name} was built with max_ways={self.max_ways} label slots and cannot answer a "
                f"{ways}-way episode; build it with max_ways={ways} or more"
            )

    def predict(self, support_x, support_y, query_x, ways):
        self._check_ways(ways)
        logits, _ = self.answer(*self.tokens(support_x, support_y, query_x))
        return logits[..., :ways]

    def training_step(self, ep, batch_idx):
        self._check_ways(ep.ways)
        logits, support_logits = self.answer(*self.tokens(ep.support_x, ep.support_y, ep.query_x))
        logits = logits[..., : ep.ways]
        loss = F.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten())
        if support_logits is not None:
            loss = loss + F.cross_entropy(support_logits[..., : ep.ways].flatten(0, 1), ep.support_y.flatten())
        acc = (logits.argmax(-1) == ep.query_y).float().mean()
        self.log_dict({"loss": loss, "acc": acc}, prog_bar=True, on_step=True)
        return loss
