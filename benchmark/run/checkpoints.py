"""Trained weights beside the records, so a results folder carries what `bench verify` needs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..core.files import sha256_file

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
