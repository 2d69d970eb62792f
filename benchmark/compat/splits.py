"""One split of a prepared dataset, as torchmeta and learn2learn serve theirs: the benchmark's versioned class
split, its images grouped by class, read as float32 in [0, 1] at the benchmark's image size.

The splits, image sizes and channels are those of the registered protocols (`PROTOCOL_OF`), so a
torchmeta-style `omniglot(..., meta_train=True)` reads exactly the classes `omniglot-5w1s` trains on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from ..core import paths
from ..core.errors import BenchError
from ..data import prepare, read_manifest_if_prepared
from ..protocols import PROTOCOLS, Protocol, SplitSpec
from ..store import EpisodeView, build_view, load_store


class CompatError(BenchError, ValueError):
    """A request the compatible interfaces cannot serve; a ValueError too, as torchmeta raises for bad splits."""


# dataset -> the protocol whose splits, image size and channels it is read with
PROTOCOL_OF = {
    "omniglot": "omniglot-5w1s",
    "mini-imagenet": "mini-imagenet-5w1s",
    "cifar-fs": "cifar-fs-5w1s",
    "fc100": "fc100-5w1s",
    "cub": "cub-5w1s",
    "caltech101": "caltech101-5w1s",
}
LAKE = "omniglot-lake-5w1s"  # Omniglot with use_vinyals_split=False: background / evaluation alphabets
PACS_DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
SPLITS = ("train", "val", "test")
# torchmeta and learn2learn both serve Omniglot inverted (white strokes on black); the prepared images are
# black on white, so these datasets are inverted to match the models their users have trained
INVERTED = frozenset({"omniglot"})


def meta_split_name(meta_train: bool, meta_val: bool, meta_test: bool, meta_split: str | None) -> str:
    """torchmeta's rule: exactly one of the three flags, or `meta_split` when none is set."""
    flags = int(bool(meta_train)) + int(bool(meta_val)) + int(bool(meta_test))
    if flags > 1:
        raise CompatError(
            "more than one of meta_train, meta_val and meta_test is True; set exactly one (or none, with meta_split)"
        )
    if flags == 1:
        return "train" if meta_train else "val" if meta_val else "test"
    if meta_split is None:
        raise CompatError(
            'the meta-split is undefined: pass meta_train=True (or meta_val / meta_test), or meta_split="train" '
            '(or "val" / "test")'
        )
    if meta_split not in SPLITS:
        raise CompatError(f"unknown meta_split {meta_split!r}; it must be one of {', '.join(SPLITS)}")
    return meta_split


def ensure_data(datasets, folder: str | os.PathLike | None, download: bool) -> str:
    """The data folder (`folder`, else $BENCH_DATA_DIR, else the default), with every dataset prepared in it:
    prepared here with `download=True` (sources found as `bench data prepare` finds them), else an error
    that names both fixes."""
    root = paths.data_dir(folder)
    for name in datasets:
        if read_manifest_if_prepared(name, root) is not None:
            continue
        if not download:
            raise CompatError(
                f"{name} is not prepared in {root}; pass download=True (sources as for `bench data prepare`: "
                f"${paths.source_env_var(name)}, ${paths.SOURCE_ENV} or the download URL) or run "
                f"`bench data prepare {name} --data-dir {root} --source PATH`"
            )
        prepare(name, data_dir=root)
    return str(root)


@dataclass
class ClassImages:
    """One split's images grouped by class (the store's `EpisodeView`, class order as the harness has it)."""

    dataset: str
    split: str  # "train", "val" or "test"
    spec: SplitSpec
    view: EpisodeView  # with mean 0 and std 1, so `view.normalise` is x / 255
    invert: bool

    @property
    def classes(self) -> tuple[str, ...]:
        return self.view.classes

    @property
    def n_classes(self) -> int:
        return self.view.n_classes

    def pixels(self, rows: torch.Tensor) -> torch.Tensor:
        """Images at view rows `rows` (any shape) as float32 in [0, 1]: [*rows.shape, C, H, W]."""
        return to_unit(self.view, self.view.images[rows], self.invert)

    def check(self, ways: int, per_class: int, need: str) -> None:
        """Fail before sampling when the split cannot give `ways` classes with `per_class` images each."""
        where = f"the {self.dataset} meta-{self.split} split"
        if ways < 2 or per_class < 1:
            raise CompatError(f"tasks need at least 2 ways and 1 image per class (got {ways} ways, {need})")
        if ways > self.n_classes:
            raise CompatError(f"{ways}-way tasks need {ways} classes, but {where} has {self.n_classes}; use fewer ways")
        smallest = int(self.view.counts.min())
        if per_class > smallest:
            raise CompatError(
                f"tasks of {need} need {per_class} images per class, but the smallest class of {where} has "
                f"{smallest}; lower them to at most {smallest} in all"
            )


def to_unit(view: EpisodeView, images: torch.Tensor, invert: bool) -> torch.Tensor:
    x = view.normalise(images)
    return 1.0 - x if invert else x


def unit_view(view: EpisodeView) -> EpisodeView:
    """The view with mean 0 and std 1, so that the harness's normalisation gives plain x / 255."""
    return replace(view, mean=torch.zeros_like(view.mean), std=torch.ones_like(view.std))


def split_spec(dataset: str, split: str, use_vinyals_split: bool = True, domain: str | None = None) -> Protocol:
    """The registered protocol whose `split` part a dataset's meta-split is (its train, val or test split)."""
    if dataset == "pacs":
        if split != "test":
            raise CompatError(
                "PACS has no class split: in this benchmark it is a test domain only (the cross-domain "
                "protocols test on all 7 classes of one domain); use meta_test=True with domain=..."
            )
        if domain not in PACS_DOMAINS:
            raise CompatError(f"PACS needs domain= one of {', '.join(PACS_DOMAINS)} (got {domain!r})")
        return PROTOCOLS.get(f"caltech101-to-pacs-{domain.replace('_', '-')}-5w1s")
    if dataset not in PROTOCOL_OF:
        known = ", ".join([*PROTOCOL_OF, "pacs"])
        raise CompatError(f"no compatible helper for dataset {dataset!r}; known: {known}")
    if dataset == "omniglot" and not use_vinyals_split:
        if split == "val":
            raise CompatError("Omniglot without the Vinyals split (the Lake split) has no meta-validation classes")
        return PROTOCOLS.get(LAKE)
    return PROTOCOLS.get(PROTOCOL_OF[dataset])


def class_images(
    dataset: str,
    split: str,
    folder: str | os.PathLike | None = None,
    download: bool = False,
    use_vinyals_split: bool = True,
    domain: str | None = None,
    device: str | torch.device | None = None,
) -> ClassImages:
    """A dataset's meta-`split` as the benchmark defines it, loaded from the prepared data."""
    proto = split_spec(dataset, split, use_vinyals_split, domain)
    stage = proto.stages[0]
    spec = {"train": stage.train, "val": stage.val, "test": stage.test[-1]}[split]
    if spec is None:
        raise CompatError(f"{dataset}: the split behind {proto.name} has no meta-{split} part")
    root = ensure_data([spec.dataset], folder, download)
    store = load_store(spec.dataset, proto.image_size, proto.channels, root)
    view = unit_view(build_view(store, spec))
    if device is not None:
        view = view.to(device)
    return ClassImages(dataset, split, spec, view, spec.dataset in INVERTED)
