"""Training with a Lightning Trainer on a stream of batches drawn on the fly, with a step and time budget;
on several devices with Lightning's DDP, and with a Lightning logger for the training curves."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from ..core import paths
from ..core.errors import BenchError
from .config import RunConfig
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
        if not trainer.is_global_zero:  # under DDP one bar, the first process's
            return
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
            # DDP on the CPU: channels-last gradients do not match its buckets' layout (a copy, not an error)
            warnings.filterwarnings("ignore", message=".*Grad strides do not match bucket view strides.*")
            yield
    finally:
        lg.setLevel(level)


class LossCurve(pl.Callback):
    """The training loss as a logged metric (the methods log nothing themselves), averaged over DDP processes."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            module.log("train_loss", loss.detach(), on_step=True, sync_dist=trainer.world_size > 1)


def shard(batch: Any, rank: int, world: int) -> Any:
    """This process's part of a training batch under DDP: the rank-th of `world` equal slices along the batch
    dimension. Every process draws the whole batch from the same seeded generator, so together they train on
    exactly the batches one device would, and DDP's mean of their gradients is the one device's gradient of a
    loss that is a mean over the batch."""
    if world == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % world:
            raise BenchError(
                f"a training batch of {batch.shape[0]} cannot be split evenly over --devices {world}; make the "
                f"meta-batch (or batch size) a multiple of {world}, e.g. --hparam meta_batch={world * 4}"
            )
        part = batch.shape[0] // world
        return batch[rank * part : (rank + 1) * part]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b, rank, world) for b in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        cut = {
            f.name: shard(v, rank, world)
            for f in dataclasses.fields(batch)
            if isinstance(v := getattr(batch, f.name), torch.Tensor)
        }
        return dataclasses.replace(batch, **cut)
    return batch


def process_device(device: torch.device, devices: int) -> torch.device:
    """The device this process trains on: under DDP on GPUs each process has its own (Lightning's LOCAL_RANK)."""
    if devices > 1 and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def is_first_process() -> bool:
    """False in the extra processes that Lightning's DDP launcher (or torchrun) started: they train in step with
    the first and leave scoring and writing to it."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def training_logger(cfg: RunConfig, method: str, protocol: str, seed: int) -> tuple[Any, dict | None]:
    """The Lightning logger `cfg.logger` names, writing offline under `cfg.log_dir` (default: logs/ beside the
    results folder), and what the record says about it; (None, None) without one."""
    if cfg.logger is None:
        return None, None
    results = paths.results_dir(cfg.results_dir)
    root = Path(cfg.log_dir) if cfg.log_dir else results.resolve().parent / "logs"
    name = f"{method}/{protocol}"
    run = cfg.run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    version = f"{run}-seed{seed}"
    from pytorch_lightning import loggers

    logger: Any
    if cfg.logger == "csv":
        logger = loggers.CSVLogger(root, name=name, version=version)
        where = Path(logger.log_dir)
    elif cfg.logger == "tensorboard":
        logger = loggers.TensorBoardLogger(root, name=name, version=version, default_hp_metric=False)
        where = Path(logger.log_dir)
    elif cfg.logger == "mlflow":
        where = root / "mlruns"
        logger = loggers.MLFlowLogger(experiment_name=name, run_name=version, tracking_uri=where.resolve().as_uri())
    else:  # wandb, offline: `wandb sync` uploads it later
        where = root / "wandb"
        where.mkdir(parents=True, exist_ok=True)
        logger = loggers.WandbLogger(name=version, project=name.replace("/", "-"), save_dir=root, offline=True)
    shown = os.path.relpath(where.resolve(), results.resolve())  # relative to the results folder, like checkpoints
    return logger, {"logger": cfg.logger, "path": Path(shown).as_posix(), "run": version}


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
    devices: int = 1,
    logger: Any = None,
) -> tuple[float, int]:
    """Train for `steps` steps, or until `max_time_s` seconds if that comes first; (seconds, steps done).
    Batches are drawn on `sample_device` (where the images are) by `draw(generator)`. With `devices` > 1,
    Lightning's DDP trains in that many processes, each on its slice of every batch (see `shard`); `logger`
    (a Lightning logger) records the training loss and the learning rates."""
    if steps <= 0:
        return 0.0, 0
    place(model, device)
    extra: list[pl.Callback] = [LossCurve(), pl.callbacks.LearningRateMonitor("step")] if logger else []
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=devices,
            max_epochs=1,
            max_steps=steps,
            logger=logger or False,
            log_every_n_steps=max(1, min(50, steps // 20)),
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            callbacks=[FiniteLoss(), *([Progress(steps, max_time_s)] if progress else []), *extra, *callbacks],
            num_sanity_val_steps=0,
            deterministic=False,
            max_time=timedelta(seconds=max_time_s) if max_time_s else None,
            **(_ddp(device) if devices > 1 else {}),
        )
    if devices > 1:
        whole = draw
        draw = lambda g: shard(whole(g), trainer.global_rank, trainer.world_size)  # rank known once launched
    loader = DataLoader(Stream(draw, steps, seed, sample_device), batch_size=None, num_workers=0)
    t0 = time.perf_counter()
    with quiet_lightning():
        trainer.fit(model, train_dataloaders=loader)
    sync(device)
    return time.perf_counter() - t0, int(trainer.global_step)


def _ddp(device: torch.device) -> dict[str, Any]:
    """Trainer settings for DDP: gloo on the CPU, NCCL on GPUs, where batch norm is synchronised so that its
    statistics are the whole batch's, as on one device (PyTorch's SyncBatchNorm runs on GPUs only). Methods whose
    forward leaves some weights unused in a step (a head at test time only) are allowed."""
    from pytorch_lightning.strategies import DDPStrategy

    backend = "nccl" if device.type == "cuda" else "gloo"
    return {
        "strategy": DDPStrategy(process_group_backend=backend, find_unused_parameters=True),
        "sync_batchnorm": device.type == "cuda",
        "use_distributed_sampler": False,  # batches are drawn on the fly and sharded in `fit`
    }
