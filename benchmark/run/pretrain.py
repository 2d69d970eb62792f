"""`bench pretrain`: a protocol's training images, without their labels -> a self-supervised backbone -> an SSL
checkpoint (benchmark.methods.ssl) under the results folder's checkpoints/ssl/, named by its sha256.

Only the images of the protocol's training split are read, never its validation or test split, and the loop
receives images alone (`UnlabelledImages` carries no class ids). A split whose classes include rotated copies
(Omniglot's rotations as classes) contributes its upright images once: with every image also present turned
by 90, 180 and 270 degrees, no network could tell which way up an image was, and rotation prediction would
learn nothing.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from ..core import paths
from ..core.errors import BenchError
from ..data import ensure_prepared
from ..methods import BACKBONES
from ..methods.ssl import SSL_FOLDER, SSL_TASKS, RotationPretraining
from ..protocols import PROTOCOLS, Protocol
from ..store import load_store, split_rows
from .checkpoints import CHECKPOINTS, save_ssl_checkpoint
from .device import device_info, place, resolve_device
from .provenance import environment, git_info
from .training import fit

PRETEXT_CHECK = 512  # training images whose four turns are named once training ends (the record of the pretext)


@dataclass(frozen=True)
class PretrainRequest:
    protocol: str = "omniglot-5w1s"
    ssl: str = "rotation"
    backbone: str = "conv4"
    steps: int = 5000
    train_seconds: float | None = None  # stops training early; the checkpoint keeps the steps taken
    seed: int = 0
    batch_size: int = 64  # images per step, each shown at four turns
    lr: float = 1e-3
    device: str = "auto"
    data_dir: str | None = None
    results_dir: str | None = None
    progress: bool = True


@dataclass(frozen=True)
class UnlabelledImages:
    """What the pre-training sees: a training split's images, normalised as episodes are, and nothing else."""

    images: torch.Tensor  # uint8 [M, C, H, W]
    mean: torch.Tensor  # [C, 1, 1]
    std: torch.Tensor

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor:
        rows = torch.randint(len(self.images), (n,), generator=g, device=g.device)
        return (self.images[rows].float() / 255.0 - self.mean) / self.std


def check_request(req: PretrainRequest) -> Protocol:
    """Every option checked before any data is read."""
    if req.ssl not in SSL_TASKS:
        raise BenchError(f"--ssl {req.ssl}: choose {', '.join(SSL_TASKS)}")
    proto = PROTOCOLS.get(req.protocol)
    if proto.episode is None or not proto.is_single_stage:
        raise BenchError(
            f"--protocol {proto.name}: pre-training initialises few-shot learners, so it reads a single-stage "
            f"episodic protocol's training split"
        )
    if req.backbone not in BACKBONES:
        raise BenchError(f"--backbone: {BACKBONES.unknown_message(req.backbone)}")
    if req.steps < 1 or req.batch_size < 1:
        raise BenchError("--steps and --batch-size must be at least 1")
    for opt, v in (("--train-seconds", req.train_seconds), ("--lr", req.lr)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise BenchError(f"{opt} {v} must be a positive number")
    return proto


def unlabelled_images(proto: Protocol, data_dir: str | None) -> tuple[UnlabelledImages, dict[str, str]]:
    """The protocol's training images, upright, without labels; and the fingerprint of the data they came from."""
    split = proto.train
    store = load_store(split.dataset, proto.image_size, proto.channels, data_dir)
    rows = torch.from_numpy(split_rows(store, split))  # the split's images; its rotated copies are not added
    ch = store.images.shape[1]
    pool = UnlabelledImages(
        store.images[rows].contiguous(),
        torch.tensor(store.mean, dtype=torch.float32).view(ch, 1, 1),
        torch.tensor(store.std, dtype=torch.float32).view(ch, 1, 1),
    )
    return pool, {store.name: store.fingerprint}


def _writable(folder) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        raise BenchError(f"{folder} cannot be written ({e.strerror or e}); choose another --results") from None


def pretrain(req: PretrainRequest, log: Callable[[str], None] = print) -> dict:
    """Pre-train, write the checkpoint; {"path", "sha256", "meta"}."""
    proto = check_request(req)
    dev = resolve_device(req.device)
    folder = paths.results_dir(req.results_dir) / CHECKPOINTS / SSL_FOLDER
    _writable(folder)  # found now, not after the training
    ensure_prepared((proto.train.dataset,), req.data_dir)
    pool, fingerprints = unlabelled_images(proto, req.data_dir)
    pool = UnlabelledImages(pool.images.to(dev), pool.mean.to(dev), pool.std.to(dev))
    log(
        f"{req.ssl} pre-training of {req.backbone} on the {len(pool.images):,} training images of {proto.name} "
        f"({proto.train.label}), no labels: {req.steps} steps"
        + (f" or {req.train_seconds:g} s" if req.train_seconds else "")
        + f", {req.batch_size} images x 4 turns per step, seed {req.seed}, device {dev}"
    )
    pl.seed_everything(req.seed, verbose=False)
    model = RotationPretraining(req.backbone, proto.channels, proto.image_size, lr=req.lr)
    seconds, steps = fit(
        model,
        lambda g: pool.batch(req.batch_size, g),
        req.steps,
        req.seed,
        dev,
        dev,
        progress=req.progress,
        max_time_s=req.train_seconds,
    )
    place(model, dev)
    check = pool.batch(min(PRETEXT_CHECK, len(pool.images)), torch.Generator(device=dev).manual_seed(req.seed + 1))
    pretext = model.pretext_accuracy(check)
    meta = {
        "ssl": req.ssl,
        "protocol": proto.name,
        "protocol_version": proto.version,
        "train_split": proto.train.label,
        "images": len(pool.images),
        "backbone": req.backbone,
        "channels": proto.channels,
        "image_size": proto.image_size,
        "steps": steps,
        "budget": {"steps": req.steps, "max_time_s": req.train_seconds},
        "train_time_s": round(seconds, 3),
        "seed": req.seed,
        "batch_size": req.batch_size,
        "lr": req.lr,
        "pretext_accuracy": pretext,
        "data": fingerprints,
        "device": device_info(dev),
        "environment": environment(),
        "code": git_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    stem = f"{req.ssl}-{proto.name}-{req.backbone}-seed{req.seed}"
    saved = save_ssl_checkpoint(model.backbone, meta, folder, stem)
    log(
        f"{steps} steps in {seconds:.1f} s; the turn of {len(check)} training images named "
        f"{100 * pretext:.1f}% of the time (chance 25%)"
    )
    return {**saved, "meta": meta}
