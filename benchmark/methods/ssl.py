"""Self-supervised pre-training of a backbone, and the checkpoint a method's initialisation is read from.

The pretext task is rotation prediction (Gidaris, Singh & Komodakis, ICLR 2018): every image is shown at 0, 90,
180 and 270 degrees and a small head on the backbone's features names the turn; no class label is involved. It
suits this benchmark's data where a contrastive task (SimCLR) does not: it learns from small batches on two CPU
cores, and its signal needs no colour or crop augmentations, of which 28 px grey Omniglot has little to offer;
SimCLR wants batches of hundreds to thousands and leans on colour distortion. It is also one of the two tasks Su
et al. (ECCV 2020) add to ProtoNet and MAML.

A checkpoint (`CHECKPOINT_KIND`, written by `bench pretrain`) holds the backbone's state dict and what produced
it: the SSL task, the protocol and its training split, the backbone, input size and channels, steps, seed and
data fingerprints. A method reads it with `read_init` and `load_backbone`; a wrong file is refused with the
reason (`InitError`) before any training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import HParamError
from ..core.files import sha256_file
from .backbones import make_backbone

SSL_TASKS = ("rotation",)
CHECKPOINT_KIND = "ssl-init"
CHECKPOINT_FORMAT = 1
SSL_FOLDER = "ssl"  # under a results folder's checkpoints/
TURNS = 4  # 0, 90, 180, 270 degrees
# batch-norm buffers a checkpoint may carry that a batch-statistics backbone (MAML's) has no place for
NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class InitError(HParamError):
    """An init checkpoint that cannot start this run: missing, not an SSL checkpoint, or made for other inputs."""


def rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B, C, H, W] (square) -> the four turns of each, [4B, C, H, W], and which turn each is, [4B]."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation prediction needs square images [B, C, H, W], got {tuple(images.shape)}")
    turned = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(TURNS)])
    target = torch.arange(TURNS, device=images.device).repeat_interleave(len(images))
    return turned, target


class RotationPretraining(pl.LightningModule):
    """A backbone and a two-layer head (Su et al.'s rotation head, narrower) trained to name each image's turn.

    `training_step` takes a batch of images and nothing else: the pre-training loop has no labels to see."""

    def __init__(self, backbone: str, channels: int, image_size: int, lr: float = 1e-3, hidden: int = 128):
        super().__init__()
        self.backbone = make_backbone(backbone, channels, image_size)  # running statistics: ProtoNet keeps them
        self.head = nn.Sequential(nn.Linear(self.backbone.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, TURNS))
        self.lr = lr

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def training_step(self, images, batch_idx):
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"the SSL pre-training loop takes a tensor of images only, got {type(images).__name__}")
        x, target = rotations(images)
        loss = F.cross_entropy(self(x), target)
        self.log("loss", loss, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    @torch.no_grad()
    def pretext_accuracy(self, images: torch.Tensor) -> float:
        """How often the turn is named on these images (all four turns of each), in eval mode."""
        was = self.training
        self.eval()
        x, target = rotations(images)
        acc = (self(x).argmax(-1) == target).float().mean().item()
        self.train(was)
        return acc


@dataclass(frozen=True)
class InitCheckpoint:
    path: Path
    sha256: str
    meta: dict[str, Any]  # everything the file says about how it was made
    state_dict: dict[str, torch.Tensor]  # the backbone's


def find_init(value: str, roots: tuple[Path, ...] = ()) -> Path | None:
    """The file an `init` value names: as given (absolute, or relative to the current folder), then relative to
    each root (a results folder, the folder above it), then by its name under a root's checkpoints/ssl/ (an SSL
    checkpoint's name ends in its sha256's first 12 digits, so a moved results folder still finds it)."""
    given = Path(value).expanduser()
    candidates = [given, *(r / given for r in roots if not given.is_absolute())]
    candidates += [r / "checkpoints" / SSL_FOLDER / given.name for r in roots]
    return next((c for c in candidates if c.is_file()), None)


def read_init(value: str, roots: tuple[Path, ...] = ()) -> InitCheckpoint:
    """The SSL checkpoint `value` names, checked to be one; InitError otherwise."""
    path = find_init(value, roots)
    if path is None:
        where = ", ".join(str(r) for r in roots)
        raise InitError(
            f"init={value}: no such file (looked relative to the current folder{f' and {where}' if where else ''}); "
            f"`bench pretrain --ssl rotation --protocol PROTOCOL` writes one and prints its path"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise InitError(f"init={value}: {path} is not a torch checkpoint ({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("kind") != CHECKPOINT_KIND:
        what = f"a trained {blob['method']} model's checkpoint" if isinstance(blob, dict) and "method" in blob else ""
        raise InitError(
            f"init={value}: {path} is not an SSL checkpoint{f' (it is {what})' if what else ''}; "
            f"`bench pretrain` writes one"
        )
    if blob.get("format") != CHECKPOINT_FORMAT or not isinstance(blob.get("state_dict"), dict):
        raise InitError(
            f"init={value}: {path} is an SSL checkpoint of format {blob.get('format')!r}; this code reads format "
            f"{CHECKPOINT_FORMAT}: run `bench pretrain` again"
        )
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return InitCheckpoint(path, sha256_file(path), meta, blob["state_dict"])


def input_problem(meta: dict[str, Any], backbone: str, channels: int | None, image_size: int | None) -> str | None:
    """Why a checkpoint cannot initialise this backbone at this input, or None."""
    wrong = [
        f"{what} {meta.get(key)!r} (this run: {want!r})"
        for what, key, want in (
            ("backbone", "backbone", backbone),
            ("channels", "channels", channels),
            ("image size", "image_size", image_size),
        )
        if want is not None and meta.get(key) != want
    ]
    return f"it was pre-trained for {', '.join(wrong)}" if wrong else None


def load_backbone(module: nn.Module, ck: InitCheckpoint) -> None:
    """Copy the checkpoint's weights into `module`, every one it has, exactly; the checkpoint's batch-norm running
    statistics are left out where `module` normalises with batch statistics (MAML's backbone)."""
    own = module.state_dict()
    missing = [k for k in own if k not in ck.state_dict]
    extra = [k for k in ck.state_dict if k not in own and not k.endswith(NORM_BUFFERS)]
    shapes = [k for k in own if k in ck.state_dict and ck.state_dict[k].shape != own[k].shape]
    if missing or extra or shapes:
        found = (("missing", missing), ("unexpected", extra), ("of other shapes", shapes))
        bits = [f"{label}: {', '.join(keys[:4])}" for label, keys in found if keys]
        raise InitError(f"init={ck.path}: its state dict does not fit this backbone ({'; '.join(bits)})")
    module.load_state_dict({k: ck.state_dict[k] for k in own}, strict=True)


def split_problem(meta: dict[str, Any], train_split: str) -> str | None:
    """Why a checkpoint may not start a run whose training split is `train_split` (a SplitSpec label), or None:
    pre-trained on another split's images, it may have seen this protocol's test images."""
    if meta.get("train_split") != train_split:
        return (
            f"it was pre-trained on the images of {meta.get('train_split')!r} ({meta.get('protocol')}), not this "
            f"protocol's training split {train_split!r}, so it may have seen this protocol's test images"
        )
    return None


def pretrained_for(ck: InitCheckpoint) -> str:
    """One line on what made a checkpoint, for logs and errors."""
    m = ck.meta
    return (
        f"{m.get('ssl')} on {m.get('protocol')} v{m.get('protocol_version')}'s training images, {m.get('backbone')}, "
        f"{m.get('steps')} steps, seed {m.get('seed')}"
    )


def recorded_init(hparams: dict[str, Any], roots: tuple[Path, ...]) -> tuple[Path | None, str | None]:
    """For `bench verify`: the init checkpoint a record's hyper-parameters name (None without one) and why it is
    not the file the record was made from (None when its sha256 is the recorded one). InitError when it is gone."""
    value = hparams.get("init")
    if not value or "init_sha256" not in hparams:  # another method's `init` (icl-transformer's) names no file
        return None, None
    path = find_init(str(value), roots)
    if path is None:
        raise InitError(
            f"the init checkpoint {value} the record names is missing (looked relative to the current folder and "
            f"{', '.join(str(r) for r in roots)}); a results folder must keep its checkpoints/{SSL_FOLDER}/"
        )
    got, want = sha256_file(path), str(hparams.get("init_sha256"))
    if got != want:
        return path, (
            f"the init checkpoint {path} has sha256 {got[:12]}..., the record says {want[:12]}...: the run did not "
            f"start from this file"
        )
    return path, None
