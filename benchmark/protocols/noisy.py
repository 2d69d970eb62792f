"""Noisy-label protocols: Caltech-101 classification with corrupted training labels and a small clean meta set,
and the corruption itself, a pure function of (protocol name, version, image).

Every one of the 101 object classes of the prepared `caltech101` (its preparation leaves out
BACKGROUND_Google; Faces and Faces_easy stay two classes, as in the usual 101) splits by a fixed hash order of
its images (SplitSpec.ranks, the order the holdout splits use): ranks 0-4 are the clean meta set (true labels),
ranks 5-29 the 25 training images whose labels are corrupted (together the standard 30 training images per
class), and ranks 30-79 the test set, capped at 50 images per class as is usual for Caltech-101 (2,945 images:
the smallest classes have 31 images, so some keep a single test image). Disjoint rank ranges make the three
sets disjoint by construction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from .protocol import NoiseSpec, Protocol, SplitSpec, Stage, register_protocol

RANKS = "caltech101-noisy-v1"  # the name of the hash order; a new order needs a new name
META, TRAIN, TEST = (0, 5), (5, 30), (30, 80)
FAMILY = "caltech101-noisy"


def _draw(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def corrupt(noise: NoiseSpec, key: str, labels: np.ndarray, images: Sequence[str], n_classes: int) -> np.ndarray:
    """The labels after the noise: `labels` are class ids in 0..n_classes-1 (sorted class order), `images` each
    image's identity (its class name and position in the prepared data), `key` names the protocol and version.

    Within each class the images are ranked by a hash of (key, image) and the first round(rate * n) are moved:
    to class c+1 mod n_classes (pair), or to the other class a second hash picks uniformly (symmetric: one of
    the n_classes - 1 others; never the true class, so every moved label is wrong)."""
    if noise.kind == "symmetric" and n_classes < 2:
        raise ValueError("symmetric noise needs at least two classes")
    labels = np.asarray(labels, dtype=np.int64)
    out = labels.copy()
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c).tolist()
        ranked = sorted(members, key=lambda i: _draw(f"{key}|move|{images[i]}"))
        for i in ranked[: round(noise.rate * len(members))]:
            if noise.kind == "pair":
                out[i] = (c + 1) % n_classes
            else:
                k = _draw(f"{key}|to|{images[i]}") % (n_classes - 1)
                out[i] = k + (k >= c)
    return out


def noise_key(protocol: Protocol) -> str:
    return f"{protocol.name}|v{protocol.version}"


def ranked(start_stop: tuple[int, int]) -> SplitSpec:
    return SplitSpec("caltech101", ranks=(RANKS, *start_stop))


SYMMETRIC = "symmetric noise (each moved label goes to a uniformly drawn other class)"
NOISE = {
    "sym20": (NoiseSpec("symmetric", 0.2), f"20% {SYMMETRIC}"),
    "sym40": (NoiseSpec("symmetric", 0.4), f"40% {SYMMETRIC}"),
    "sym60": (NoiseSpec("symmetric", 0.6), f"60% {SYMMETRIC}"),
    "flip40": (NoiseSpec("pair", 0.4), "40% pair-flip noise (class c to class c+1 in sorted class order)"),
}
for tag, (spec, what) in NOISE.items():
    register_protocol(
        Protocol(
            name=f"caltech101-noisy-{tag}",
            version=1,
            setting="noisy-labels",
            description=f"Caltech-101 classification over its 101 object classes with {what} on 25 of the 30 training "
            f"images per class (exactly round(rate x 25) per class) and the other 5 a clean meta set with true labels; "
            f"tested on up to 50 further images per class (2,945 in all). From scratch, 84x84 RGB",
            stages=(Stage(train=ranked(TRAIN), val=ranked(META), test=(ranked(TEST),)),),
            episode=None,
            image_size=84,
            channels=3,
            train_steps=5000,
            family=FAMILY,
            noise=spec,
        )
    )
