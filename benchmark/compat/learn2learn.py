"""learn2learn's task interface on the benchmark's prepared data and class splits.

    from benchmark.compat.learn2learn import get_tasksets  # was: from learn2learn.vision.benchmarks import ...

    tasksets = get_tasksets("omniglot", train_ways=5, train_samples=2, test_ways=5, test_samples=2, root="data")
    X, y = tasksets.train.sample()   # X [ways*samples, C, H, W] float32 in [0, 1], y [ways*samples] int64

As learn2learn's `TaskDataset` (with its benchmarks' `NWays`, `KShots`, `RemapLabels`, `ConsecutiveLabels`):
`sample()` returns one task of `ways` classes with `samples` images each, sorted by label (class 0's images
first), labels 0..ways-1; its examples pass `samples = 2 * shots` and split adaptation and evaluation images by
even and odd positions. `num_tasks=-1` draws a fresh task every time; a positive count fixes that many tasks
(task i the same every time it is asked for). Images are those of `benchmark.compat.torchmeta` (Omniglot
inverted, as learn2learn's `1.0 - x`). Unlike learn2learn's Omniglot benchmark (a random 1100/100/423 character
split, a random rotation per task), the classes are the benchmark's versioned splits, rotations included.
"""

from __future__ import annotations

import os
from collections import namedtuple

import numpy as np
import torch

from .splits import ClassImages, CompatError, class_images

BenchmarkTasksets = namedtuple("BenchmarkTasksets", ("train", "validation", "test"))
ALIASES = {"cifarfs": "cifar-fs", "mini_imagenet": "mini-imagenet", "miniimagenet": "mini-imagenet"}


class TaskDataset:
    """Tasks of `ways` classes x `samples` images from one split; `sample()` gives (X, y) of one task."""

    def __init__(self, images: ClassImages, ways: int, samples: int, num_tasks: int = -1, seed: int | None = None):
        if num_tasks < -1 or num_tasks == 0:
            raise CompatError(f"num_tasks must be -1 (a fresh task every time) or positive (got {num_tasks})")
        images.check(ways, samples, f"{samples} samples per class")
        self.images, self.ways, self.samples, self.num_tasks = images, ways, samples, num_tasks
        self.seed = int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item())
        self._rng = np.random.default_rng([self.seed, 0])
        self._next = 0

    def _task(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        view = self.images.view
        classes = rng.choice(self.images.n_classes, self.ways, replace=False)
        slots = np.stack([rng.permutation(int(view.counts[c]))[: self.samples] for c in classes])
        rows = view.offsets[torch.as_tensor(classes, device=view.device)].unsqueeze(1)
        rows = rows + torch.as_tensor(slots, device=view.device)  # [ways, samples], class j labelled j
        x = self.images.pixels(rows.flatten())
        y = torch.arange(self.ways, device=x.device).repeat_interleave(self.samples)
        return x, y

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_tasks == -1:
            return self._task(self._rng)
        return self[int(self._rng.integers(self.num_tasks))]

    def __len__(self) -> int:
        return 1 if self.num_tasks == -1 else self.num_tasks  # learn2learn's length of an endless taskset

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_tasks == -1:
            return self._task(self._rng)
        if not -self.num_tasks <= i < self.num_tasks:
            raise IndexError(f"task {i} of a taskset of {self.num_tasks}")
        return self._task(np.random.default_rng([self.seed, 1, i % self.num_tasks]))

    def __iter__(self):
        self._next = 0
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_tasks != -1 and self._next >= self.num_tasks:
            raise StopIteration
        self._next += 1
        return self.sample() if self.num_tasks == -1 else self[self._next - 1]


def get_tasksets(
    name: str,
    train_ways: int = 5,
    train_samples: int = 10,
    test_ways: int = 5,
    test_samples: int = 10,
    num_tasks: int = -1,
    root: str | os.PathLike | None = "~/data",
    device: str | torch.device | None = None,
    seed: int | None = None,
    download: bool = False,
) -> BenchmarkTasksets:
    """learn2learn's `get_tasksets`: train, validation and test tasksets of a dataset ("omniglot",
    "mini-imagenet", "cifar-fs", "fc100", "cub", "caltech101"); `root` is the prepared-data folder (None: the
    default), `device` where the images are kept and tasks are built."""
    dataset = ALIASES.get(name, name)
    parts = []
    for i, (split, ways, samples) in enumerate(
        (("train", train_ways, train_samples), ("val", test_ways, test_samples), ("test", test_ways, test_samples))
    ):
        images = class_images(dataset, split, root, download, device=device)
        parts.append(TaskDataset(images, ways, samples, num_tasks, None if seed is None else seed + i))
    return BenchmarkTasksets(*parts)
