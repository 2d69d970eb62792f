"""The algorithm contract: what a method implements to be benchmarked (and what `bench submit` checks).

A method is a `pytorch_lightning.LightningModule` subclass of `MetaLearner` that
- declares `name`, a one-line `paper` citation and its hyper-parameters with defaults in `HPARAMS`;
- says whether it reads the support set as a sequence (`shuffled_support`; then the support is not class-major);
- says what it trains on with `training_data`: "episodes" (batches of `Episodes`) or "batches"
  (`(images, class ids)` over all meta-training classes, for pre-training baselines);
- implements `training_step(batch, batch_idx) -> loss` and `configure_optimizers()`;
- implements `predict(support_x, support_y, query_x, ways) -> logits` over a batch of test episodes:
  support_x [B, N*K, C, H, W], support_y [B, N*K] with values 0..N-1, query_x [B, N*Q, C, H, W];
  it returns [B, N*Q, N]. The harness calls it under `torch.no_grad()` in eval mode; a method that
  adapts with gradients at test time turns them back on inside (`with torch.enable_grad(): ...`).
Nothing about files, seeds, devices or logging lives in a method: the harness owns those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch

from ..core.errors import HParamError
from ..core.registry import Registry
from ..episodes import Episodes
from ..protocols import EpisodeSpec, Protocol
from .backbones import BACKBONES
from .recipes import PaperResult, Recipe
from .search import Distribution

ALGORITHMS: Registry[type[MetaLearner]] = Registry("method")

# Hyper-parameters every method has; a method's own HPARAMS add to or override these.
COMMON_HPARAMS: dict[str, Any] = {
    "backbone": "conv4",
    "train_ways": 0,  # 0: the protocol's ways
    "train_shots": 0,  # 0: the protocol's shots
    "train_queries": 0,  # 0: the protocol's queries
    "meta_batch": 1,  # episodes per training step (episodic methods)
    "eval_batch": 50,  # test episodes per forward pass; memory, not results, depends on it
}


# Inclusive (low, high) bounds, None for open; a method adds its own in HPARAM_BOUNDS. Every float must
# be finite, and a learning rate (a name that is lr or ends in _lr) positive.
HPARAM_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "train_ways": (0, None),
    "train_shots": (0, None),
    "train_queries": (0, None),
    "meta_batch": (1, None),
    "eval_batch": (1, None),
}


def _out_of_bounds(key: str, value: Any, bounds: dict[str, tuple[float | None, float | None]]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key}={value} is not a finite number"
    if (key == "lr" or key.endswith("_lr")) and value <= 0:
        return f"{key}={value}: a learning rate must be positive"
    if key == "train_ways" and value == 1:
        return "train_ways=1: an episode needs at least 2 ways (0 means the protocol's)"
    low, high = bounds.get(key, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"at least {low}" if high is None else f"at most {high}" if low is None else f"in [{low}, {high}]"
        return f"{key}={value} must be {span}"
    return None


@dataclass(frozen=True)
class TaskInfo:
    """What a method may know about the protocol when it is built."""

    ways: int
    shots: int
    queries: int
    image_size: int
    channels: int
    n_train_classes: int


class MetaLearner(pl.LightningModule):
    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    training_data: ClassVar[str] = "episodes"
    # True for methods that read the support set as a sequence: the harness then hands them the support in
    # a fixed shuffled order (benchmark.episodes.support_order), the same for every such method
    shuffled_support: ClassVar[bool] = False
    HPARAMS: ClassVar[dict[str, Any]] = {}
    RECIPES: ClassVar[tuple[Recipe, ...]] = ()  # the paper's set-up per protocol family
    PAPER_RESULTS: ClassVar[dict[str, PaperResult]] = {}  # protocol name -> what the paper reported
    HPARAM_BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {}  # (low, high), None = open
    # what `bench sweep --trials N` draws each hyper-parameter from (methods.search); empty: nothing to search
    SEARCH_SPACE: ClassVar[dict[str, Distribution]] = {}

    def __init__(self, task: TaskInfo, **overrides: Any):
        super().__init__()
        self.task = task
        self.hp = self.resolve_hparams(overrides)
        self.save_hyperparameters({"task": task.__dict__, **self.hp})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {**COMMON_HPARAMS, **cls.HPARAMS}

    @classmethod
    def resolve_hparams(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        defaults = cls.defaults()
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise HParamError(
                f"{cls.name or cls.__name__} has no hyper-parameter(s) {', '.join(unknown)}; "
                f"it has: {', '.join(sorted(defaults))}"
            )
        out = dict(defaults)
        for k, v in overrides.items():
            out[k] = _coerce(k, v, defaults[k])
        problems = [p for k, v in out.items() if (p := _out_of_bounds(k, v, {**HPARAM_BOUNDS, **cls.HPARAM_BOUNDS}))]
        if out["backbone"] not in BACKBONES:
            problems.append(BACKBONES.unknown_message(str(out["backbone"])))
        if problems:
            raise HParamError(f"{cls.name or cls.__name__}: " + "; ".join(problems))
        return out

    @classmethod
    def supports(cls, protocol: Protocol) -> str | None:
        """None if the method can run the protocol, else the reason it cannot."""
        return None

    @classmethod
    def training_episodes(cls, hp: dict[str, Any], protocol: Protocol) -> EpisodeSpec:
        """The episode shape this method trains on; raise HParamError for a combination it cannot train."""
        e = protocol.episode_spec
        return EpisodeSpec(hp["train_ways"] or e.ways, hp["train_shots"] or e.shots, hp["train_queries"] or e.queries)

    def train_spec(self, protocol: Protocol) -> EpisodeSpec:
        return self.training_episodes(self.hp, protocol)

    def predict(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, ways: int
    ) -> torch.Tensor:
        raise NotImplementedError

    def predict_episodes(self, ep: Episodes) -> torch.Tensor:
        return self.predict(ep.support_x, ep.support_y, ep.query_x, ep.ways)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # the harness samples batches on the training device already


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Command-line values arrive as strings; give them the type of the default."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise HParamError(f"hyper-parameter {key}={value!r} is not a {type(default).__name__}") from None
    return value


def register(cls: type) -> type:
    """Class decorator: `@register` on a MetaLearner subclass with a `name`."""
    if not (isinstance(cls, type) and issubclass(cls, MetaLearner)) or not cls.name:
        raise TypeError("@register needs a MetaLearner subclass with a `name`")
    ALGORITHMS.register(cls.name, cls)
    return cls


def prototypes(features: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means of support features: [B, S, D], [B, S] -> [B, N, D]. Shared by metric methods."""
    onehot = torch.nn.functional.one_hot(labels, ways).to(features.dtype)  # [B, S, N]
    return onehot.transpose(1, 2) @ features / onehot.sum(1).unsqueeze(-1).clamp_min(1)
