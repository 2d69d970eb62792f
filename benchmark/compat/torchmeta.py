"""torchmeta's dataset helpers and `BatchMetaDataLoader`, on the benchmark's prepared data and class splits.

A torchmeta script runs here with two changed import lines:

    from benchmark.compat.torchmeta import omniglot  # was: from torchmeta.datasets.helpers import omniglot
    from benchmark.compat.torchmeta import BatchMetaDataLoader  # was: from torchmeta.utils.data import ...

What matches torchmeta 1.8 (`torchmeta/datasets/helpers.py`, `ClassSplitter`, `Categorical`):
- `helper(folder, shots, ways, shuffle=True, test_shots=None, seed=None, meta_train/meta_val/meta_test or
  meta_split=..., download=False)`; `test_shots` defaults to `shots`.
- A task is `{"train": ..., "test": ...}` with `shots` and `test_shots` images per class, class-major, each
  class labelled by a random permutation of 0..ways-1 (torchmeta's `Categorical(ways)`). `shuffle` draws which
  images of a class a task uses (False: its first `shots + test_shots`, in the prepared order).
- Images are float32 in [0, 1], [C, H, W]; Omniglot is 28x28, one channel, inverted (white strokes), with the
  rotations by 90, 180 and 270 degrees as classes of their own (torchmeta's default class augmentation).
- `BatchMetaDataLoader(dataset, batch_size, shuffle, num_workers)` yields {"train": (inputs, targets),
  "test": (inputs, targets)}, inputs [batch, ways*shots, C, H, W] float32 and targets [batch, ways*shots]
  int64; `shuffle=True` draws random class combinations, False goes through them in order.

What differs: the classes are the benchmark's versioned splits (the Vinyals split for Omniglot, the standard
split files elsewhere) and images are resized as the benchmark resizes them (Lanczos, to the protocol's size).
`seed` makes every draw reproducible (torchmeta's loader draws classes from Python's global `random`);
without one, draws start from torch's global generator, so `torch.manual_seed` fixes them.
"""

from __future__ import annotations

import math
import os
import sys
from collections import OrderedDict
from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .episodes import protocol_episodes
from .splits import ClassImages, CompatError, class_images, meta_split_name

__all__ = [
    "BatchMetaDataLoader",
    "CombinationMetaDataset",
    "Task",
    "caltech101",
    "cifar_fs",
    "cub",
    "fc100",
    "miniimagenet",
    "omniglot",
    "pacs",
    "protocol_episodes",
]

# torchmeta keywords that take PIL transforms or class-augmentation objects; here images are tensors already
_UNSUPPORTED = ("transform", "target_transform", "dataset_transform", "class_augmentations", "num_classes_per_task")


def _base_seed(seed: int | None) -> int:
    return int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item())


class Task(Dataset):
    """One side ("train" or "test") of a task: (image, target) items, as torchmeta's tasks give."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, num_classes: int):
        self.inputs, self.targets, self.num_classes = inputs, targets, num_classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], int(self.targets[index])


class CombinationMetaDataset:
    """Tasks over combinations of `ways` classes of one split, indexed like torchmeta's: `dataset[(3, 17, ...)]`."""

    def __init__(self, images: ClassImages, ways: int, shots: int, test_shots: int, shuffle: bool, seed: int | None):
        images.check(ways, shots + test_shots, f"{shots} + {test_shots} images per class")
        self.images, self.num_classes_per_task = images, ways
        self.shots, self.test_shots, self.shuffle = shots, test_shots, shuffle
        self.seed(seed)

    # --- torchmeta's attributes ------------------------------------------------------------------------
    @property
    def meta_split(self) -> str:
        return self.images.split

    @property
    def meta_train(self) -> bool:
        return self.meta_split == "train"

    @property
    def meta_val(self) -> bool:
        return self.meta_split == "val"

    @property
    def meta_test(self) -> bool:
        return self.meta_split == "test"

    @property
    def num_classes(self) -> int:
        return self.images.n_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        """The split's classes in index order (Omniglot's rotations as "Alphabet/characterNN@rot090")."""
        return self.images.classes

    def seed(self, seed: int | None = None) -> None:
        self._seed = _base_seed(seed)
        self._rng = np.random.default_rng([self._seed, 0])
        self._worker: int | None = None

    def _random(self) -> np.random.Generator:
        # DataLoader workers hold copies of this object: give each its own stream so they do not repeat draws
        info = get_worker_info()
        wid = None if info is None else info.id
        if wid != self._worker:
            self._worker, self._rng = wid, np.random.default_rng([self._seed, 0, (wid or 0) + 1])
        return self._rng

    def __len__(self) -> int:
        return min(math.comb(self.num_classes, self.num_classes_per_task), sys.maxsize)

    def __iter__(self):
        for index in combinations(range(self.num_classes), self.num_classes_per_task):
            yield self[index]

    def sample_task(self) -> OrderedDict[str, Task]:
        return self[tuple(self._random().choice(self.num_classes, self.num_classes_per_task, replace=False))]

    def __getitem__(self, index: Any) -> OrderedDict[str, Task]:
        ways = self.num_classes_per_task
        if isinstance(index, (int, np.integer)):
            raise CompatError(
                f"a task is indexed by a tuple of {ways} class indices, e.g. dataset[{tuple(range(ways))}], "
                f"not by an integer ({index})"
            )
        classes = [int(i) for i in index]
        if len(classes) != ways or len(set(classes)) != ways or not all(0 <= c < self.num_classes for c in classes):
            raise CompatError(
                f"a task needs {ways} distinct class indices in 0..{self.num_classes - 1}; got {tuple(index)}"
            )
        rng = self._random()
        view, per = self.images.view, self.shots + self.test_shots
        counts = view.counts[classes].tolist()
        if self.shuffle:
            slots = torch.as_tensor(np.stack([rng.permutation(c)[:per] for c in counts]))
        else:
            slots = torch.arange(per).expand(ways, per)
        rows = view.offsets[classes].unsqueeze(1) + slots.to(view.device)  # [ways, per]
        x = self.images.pixels(rows)
        labels = torch.as_tensor(rng.permutation(ways), device=x.device)
        y = labels.unsqueeze(1).expand(ways, per)
        k = self.shots
        return OrderedDict(
            train=Task(x[:, :k].flatten(0, 1), y[:, :k].flatten(), ways),
            test=Task(x[:, k:].flatten(0, 1), y[:, k:].flatten(), ways),
        )


class _CombinationSampler(Sampler):
    """Class combinations: random ones (with a stream of its own that goes on across epochs), or in order."""

    def __init__(self, dataset: CombinationMetaDataset, shuffle: bool):
        self.dataset, self.shuffle = dataset, shuffle
        self.rng = np.random.default_rng([dataset._seed, 1])

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        n, ways = self.dataset.num_classes, self.dataset.num_classes_per_task
        if not self.shuffle:
            yield from combinations(range(n), ways)
            return
        for _ in range(len(self)):
            yield tuple(int(c) for c in self.rng.choice(n, ways, replace=False))


def _collate(tasks: list[OrderedDict[str, Task]]) -> OrderedDict[str, tuple[torch.Tensor, torch.Tensor]]:
    return OrderedDict(
        (key, (torch.stack([t[key].inputs for t in tasks]), torch.stack([t[key].targets for t in tasks])))
        for key in tasks[0]
    )


class BatchMetaDataLoader(DataLoader):
    """torchmeta's loader: batches of tasks as {"train": (inputs, targets), "test": (inputs, targets)}."""

    def __init__(
        self,
        dataset: CombinationMetaDataset,
        batch_size: int = 1,
        shuffle: bool = True,
        sampler=None,
        num_workers: int = 0,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn=None,
    ):
        if not isinstance(dataset, CombinationMetaDataset):
            raise CompatError(
                f"BatchMetaDataLoader needs a dataset from benchmark.compat.torchmeta (omniglot(...), ...), "
                f"not {type(dataset).__name__}"
            )
        super().__init__(
            dataset,  # type: ignore[arg-type]  # indexed by class tuples, as torchmeta's are
            batch_size=batch_size,
            sampler=sampler if sampler is not None else _CombinationSampler(dataset, shuffle),
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=pin_memory,
            drop_last=drop_last,
            timeout=timeout,
            worker_init_fn=worker_init_fn,
        )


def _helper(
    dataset: str,
    folder: str | os.PathLike | None,
    shots: int,
    ways: int,
    shuffle: bool,
    test_shots: int | None,
    seed: int | None,
    kwargs: dict[str, Any],
    **fixed: Any,
) -> CombinationMetaDataset:
    bad = sorted(set(kwargs) & set(_UNSUPPORTED))
    if bad:
        raise CompatError(
            f"{', '.join(bad)} is not supported here: images come as float32 tensors in [0, 1] at the benchmark's "
            f"image size, with its class splits (Omniglot's rotations included); transform the batches instead"
        )
    options = {"meta_train", "meta_val", "meta_test", "meta_split", "download", *fixed}
    unknown = sorted(set(kwargs) - options)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; this helper takes {sorted(options)}")
    split = meta_split_name(
        kwargs.get("meta_train", False),
        kwargs.get("meta_val", False),
        kwargs.get("meta_test", False),
        kwargs.get("meta_split"),
    )
    extra = {k: kwargs.get(k, v) for k, v in fixed.items()}
    images = class_images(dataset, split, folder, bool(kwargs.get("download", False)), **extra)
    return CombinationMetaDataset(images, ways, shots, shots if test_shots is None else test_shots, shuffle, seed)


def omniglot(folder, shots, ways, shuffle=True, test_shots=None, seed=None, **kwargs) -> CombinationMetaDataset:
    """Omniglot, Vinyals split with rotations (use_vinyals_split=False: the Lake background/evaluation split)."""
    return _helper("omniglot", folder, shots, ways, shuffle, test_shots, seed, kwargs, use_vinyals_split=True)


def miniimagenet(folder, shots, ways, shuffle=True, test_shots=None, seed=None, **kwargs) -> CombinationMetaDataset:
    """mini-ImageNet, Ravi & Larochelle split, 84x84 RGB."""
    return _helper("mini-imagenet", folder, shots, ways, shuffle, test_shots, seed, kwargs)


def cifar_fs(folder, shots, ways, shuffle=True, test_shots=None, seed=None, **kwargs) -> CombinationMetaDataset:
    """CIFAR-FS, Bertinetto et al. split, 32x32 RGB."""
    return _helper("cifar-fs", folder, shots, ways, shuffle, test_shots, seed, kwargs)


def fc100(folder, shots, ways, shuffle=True, test_shots=None, seed=None, **kwargs) -> CombinationMetaDataset:
    """FC100, Oreshkin et al. superclass split, 32x32 RGB."""
    return _helper("fc100", folder, shots, ways, shuffle, test_shots, seed, kwargs)


def cub(folder, shots, ways, shuffle=True, test_shots=None, seed=None, **kwargs) -> CombinationMetaDataset:
    """CUB-200-2011, Chen et al. 2019 split, 84x84 RGB."""
    return _helper("cub", folder, shots, ways, shuffle, test_shots, seed, kwargs)


def caltech101(folder, shots, ways, shuffle=True, test_shots=None, seed=None, **kwargs) -> CombinationMetaDataset:
    """Caltech-101, the benchmark's seeded class split v1, 84x84 RGB (not in torchmeta)."""
    return _helper("caltech101", folder, shots, ways, shuffle, test_shots, seed, kwargs)


def pacs(folder, shots, ways, shuffle=True, test_shots=None, seed=None, **kwargs) -> CombinationMetaDataset:
    """PACS, one domain (domain="photo", "art_painting", "cartoon" or "sketch"), meta-test only: the 7 classes
    the cross-domain protocols test on, 84x84 RGB (not in torchmeta)."""
    return _helper("pacs", folder, shots, ways, shuffle, test_shots, seed, kwargs, domain=None)
