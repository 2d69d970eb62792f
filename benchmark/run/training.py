"""Training with a Lightning Trainer on a stream of batches drawn on the fly, with a step and time budget."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from ..core.errors import BenchError
from .device import place, sync


class TrainingDiverged(BenchError):
    pass


class Stream(IterableDataset):
    """`steps` training batches drawn on the fly, on `device`, from a generator seeded with `seed`."""

    def __init__(self, draw: Callable[[torch.Generator], object], steps: int, seed: int, device: torch.device):
        self.draw, self.steps, self.seed, self.device = draw, steps, seed, device

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[object]:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed)
        for _ in range(self.steps):
            yield self.draw(g)


class FiniteLoss(pl.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise TrainingDiverged(
                f"the training loss became {loss.item()} at step {trainer.global_step}; "
                f"training stopped and no result was written. Lower the learning rate "
                f"or check the method for a numerical bug."
            )


class Progress(pl.Callback):
    """One training bar that tells the truth about the budget: steps, or seconds when a time cap will
    end training first (Lightning's own bar counts towards a step total the cap never reaches, and
    starts with empty "Training: 0/?" lines)."""

    def __init__(self, steps: int, max_time_s: float | None):
        self.steps, self.max_time_s = steps, max_time_s
        self.bar: tqdm | None = None
        self.t0 = 0.0

    def on_train_start(self, trainer, module):
        self.t0 = time.perf_counter()
        if self.max_time_s:
            self.bar = tqdm(
                total=round(self.max_time_s),
                desc="training (time budget)",
                leave=False,
                bar_format="{l_bar}{bar}| {n}/{total} s [{elapsed}<{remaining}{postfix}]",
            )
        else:
            self.bar = tqdm(total=self.steps, desc="training", unit="step", leave=False)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.bar is None:
            return
        if self.max_time_s:
            self.bar.n = min(round(time.perf_counter() - self.t0), self.bar.total)
        else:
            self.bar.n = trainer.global_step
        metrics = {k: f"{float(v):.3f}" for k, v in trainer.progress_bar_metrics.items()}
        self.bar.set_postfix(step=trainer.global_step, **metrics, refresh=False)
        self.bar.refresh()

    def on_train_end(self, trainer, module):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's start-up banners and advice about features we do not use drown the run's own lines."""
    lg = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = lg.level
    lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            yield
    finally:
        lg.setLevel(level)


def fit(
    model: pl.LightningModule,
    draw: Callable[[torch.Generator], object],
    steps: int,
    seed: int,
    device: torch.device,
    sample_device: torch.device,
    progress: bool = True,
    max_time_s: float | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> tuple[float, int]:
    """Train for `steps` steps, or until `max_time_s` seconds if that comes first; (seconds, steps done).
    Batches are drawn on `sample_device` (where the images are) by `draw(generator)`."""
    if steps <= 0:
        return 0.0, 0
    place(model, device)
    loader = DataLoader(Stream(draw, steps, seed, sample_device), batch_size=None, num_workers=0)
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            max_epochs=1,
            max_steps=steps,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            callbacks=[FiniteLoss(), *([Progress(steps, max_time_s)] if progress else []), *callbacks],
            num_sanity_val_steps=0,
            deterministic=False,
            max_time=timedelta(seconds=max_time_s) if max_time_s else None,
        )
    t0 = time.perf_counter()
    with quiet_lightning():
        trainer.fit(model, train_dataloaders=loader)
    sync(device)
    return time.perf_counter() - t0, int(trainer.global_step)
