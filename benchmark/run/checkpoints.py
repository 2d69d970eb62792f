"""Trained weights beside the records, so a results folder carries what `bench verify` needs."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch

from ..core.files import atomic_write_bytes, sha256_bytes, sha256_file
from ..methods.ssl import CHECKPOINT_FORMAT, CHECKPOINT_KIND

CHECKPOINTS = "checkpoints"


def save_checkpoint(
    model: torch.nn.Module,
    hparams: dict,
    path: Path,
    method: str,
    protocol: str,
    protocol_version: int,
    seed: int,
    relative_to: Path | None = None,
) -> dict:
    """Weights and hyper-parameters of a trained model; the record keeps the path (relative to the
    results folder when inside it) and the sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "method": method,
            "protocol": protocol,
            "protocol_version": protocol_version,
            "seed": seed,
            "hparams": hparams,
            "state_dict": model.state_dict(),
        },
        tmp,
    )
    os.replace(tmp, path)
    shown = path
    if relative_to is not None:
        with contextlib.suppress(ValueError):  # outside the results folder: keep the path as given
            shown = path.resolve().relative_to(Path(relative_to).resolve())
    return {"path": shown.as_posix(), "sha256": sha256_file(path)}


def save_ssl_checkpoint(backbone: torch.nn.Module, meta: dict, folder: Path, stem: str) -> dict:
    """A pre-trained backbone and what produced it (`meta`: plain values), written atomically as
    `<folder>/<stem>-<sha256[:12]>.pt`, so a name is never reused for other bytes; its path and full sha256."""
    buf = io.BytesIO()
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    torch.save({**meta, "kind": CHECKPOINT_KIND, "format": CHECKPOINT_FORMAT, "state_dict": state}, buf)
    data = buf.getvalue()
    digest = sha256_bytes(data)
    path = Path(folder) / f"{stem}-{digest[:12]}.pt"
    atomic_write_bytes(path, data)
    return {"path": path.as_posix(), "sha256": digest}
