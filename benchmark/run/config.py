"""What one `bench evaluate` (or `bench submit`) asks for, as one frozen value checked before any work."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import BenchError

KINDS = ("evaluation", "submission")
# Lightning's loggers that --logger offers, and the packages each can write with beyond Lightning (any one)
LOGGERS: dict[str, tuple[str, ...]] = {
    "csv": (),
    "tensorboard": ("tensorboardX", "tensorboard"),
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
}
MAX_TEST_EPISODES = 100_000  # 166x the usual 600; more is a typo, and its index alone would not fit in memory


@dataclass(frozen=True)
class RunConfig:
    method: str
    protocols: tuple[str, ...] = ("omniglot-5w1s",)
    seeds: tuple[int, ...] | None = None  # None: the protocol's seeds
    episodes: int | None = None  # test episodes; None: the protocol's
    max_classes: int | None = None  # continual streams: learn only this many classes (the record says so)
    train_steps: int | None = None  # None: the recipe's, else the protocol's budget
    max_train_time: float | None = None  # seconds; stops training early, the record says so
    device: str = "auto"
    hparams: Mapping[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    results_dir: str | None = None
    checkpoint_dir: str | None = None
    write: bool = True
    progress: bool = True
    kind: str = "evaluation"
    source: Mapping[str, Any] | None = None  # a submission's file, class and sha256
    select: str = "auto"  # model selection: auto (validation where defined), final
    val_episodes: int = 100  # fixed validation episodes per check
    val_checks: int = 5  # checks spread over the step budget (plus one at the end)
    devices: int = 1  # training processes (Lightning DDP, the meta-batch split across them); episodic settings
    logger: str | None = None  # a Lightning logger (LOGGERS) for training curves; None: none
    log_dir: str | None = None  # where loggers write; None: logs/ beside the results folder
    run_id: str | None = None  # the record's run id; None: a fresh one (a sweep names its trials by their hash)
    sweep: Mapping[str, Any] | None = None  # the record's `sweep` section (the trial a sweep ran)

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocols", tuple(self.protocols))
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "hparams", dict(self.hparams))
        self.check()

    def check(self) -> None:
        """The settings that can be judged without the method or the data; each error names the fix."""
        if not self.protocols:
            raise BenchError("no protocol given; name at least one (see `bench list`)")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise BenchError(f"--seeds lists a seed twice ({list(self.seeds)}); each seed is one training run")
        if self.seeds is not None and not self.seeds:
            raise BenchError("--seeds is empty; give at least one seed")
        if self.episodes is not None and not 1 <= self.episodes <= MAX_TEST_EPISODES:
            raise BenchError(
                f"--episodes must be between 1 and {MAX_TEST_EPISODES:,} (got {self.episodes:,}); protocols use 600"
            )
        if self.max_classes is not None and self.max_classes < 1:
            raise BenchError(f"--max-classes must be at least 1 (got {self.max_classes})")
        if self.train_steps is not None and self.train_steps < 0:
            raise BenchError(f"--train-steps must be 0 or more (got {self.train_steps})")
        if self.max_train_time is not None and not (math.isfinite(self.max_train_time) and self.max_train_time > 0):
            raise BenchError(f"--max-train-time must be a positive number of seconds (got {self.max_train_time})")
        if self.kind not in KINDS:
            raise BenchError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if self.val_episodes < 1 or self.val_checks < 1:
            raise BenchError(
                f"--val-episodes and --val-checks must be at least 1 (got {self.val_episodes} and {self.val_checks})"
            )
        if self.select not in ("auto", "final"):
            raise BenchError(f"--select must be auto or final, not {self.select!r}")
        if self.devices < 1:
            raise BenchError(f"--devices must be at least 1 (got {self.devices})")
        if self.logger is not None:
            if self.logger not in LOGGERS:
                raise BenchError(f"--logger must be one of {', '.join(LOGGERS)}, not {self.logger!r}")
            packages = LOGGERS[self.logger]
            if packages and not any(importlib.util.find_spec(p) for p in packages):
                raise BenchError(f"--logger {self.logger} needs the {packages[0]} package: pip install {packages[0]}")
