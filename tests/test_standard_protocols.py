"""The field's standard few-shot protocols (mini-ImageNet, CIFAR-FS, FC100, CUB, and cross-domain from
mini-ImageNet to CUB and to PACS) on stand-ins built in the official layouts: each protocol's splits
select exactly the right classes, its fixed test episodes can be drawn, and one protocol per dataset runs
end to end. The real images are not available to the tests (only their split files are)."""

from __future__ import annotations

import csv
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_extra_datasets import jpeg, write_json_splits, write_tgz
from torch import nn

import baselines  # noqa: F401  (registers the built-in methods)
from benchmark import settings as harness
from benchmark.backbones import BACKBONES
from benchmark.data import DATASETS, prepare
from benchmark.episodes import EpisodeSampler, fixed_episodes
from benchmark.protocols import PROTOCOLS, SplitSpec
from benchmark.run import RunConfig
from benchmark.settings import SETTINGS
from benchmark.store import build_view, load_store

PER_CLASS = 20  # 5 shots + 15 queries
SIZES = {"mini-imagenet": 84, "cifar-fs": 32, "fc100": 32, "cub": 84}
PACS_DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")

# Five classes per split part for every dataset; names in each dataset's own style.
PARTS = ("train", "val", "test")
MINI = {part: [f"n0{k}{i:06d}" for i in range(5)] for k, part in enumerate(PARTS, 1)}
CUB = {part: [f"{3 * i + k:03d}.Bird_{3 * i + k}" for i in range(5)] for k, part in enumerate(PARTS, 1)}
CIFAR = {
    "fish": ["trout", "shark", "ray", "flatfish", "aquarium_fish"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "trees": ["oak_tree", "maple_tree", "palm_tree", "pine_tree", "willow_tree"],
}
FC100 = {"train": ["fish"], "val": ["flowers"], "test": ["trees"]}
CIFAR_ALL = [(sup, c) for sup, cs in CIFAR.items() for c in cs]
CIFAR_FS = {part: [list(pair) for pair in CIFAR_ALL[k::3]] for k, part in enumerate(("train", "val", "test"))}

NEW = [f"{d}-5w{s}s" for d in SIZES for s in (1, 5)] + [
    f"mini-imagenet-to-{t}-5w{s}s"
    for t in ("cub", *(f"pacs-{d.replace('_', '-')}" for d in PACS_DOMAINS))
    for s in (1, 5)
]


def quiet(_msg: str) -> None:
    pass


# ---- stand-ins in the official layouts ----------------------------------------------------------------


def write_mini(root: Path) -> None:
    """<root>/mini-imagenet/images/*.jpg and <root>/splits/mini-imagenet/ravi/{train,val,test}.csv."""
    images, csvs = root / "mini-imagenet" / "images", root / "splits" / "mini-imagenet" / "ravi"
    images.mkdir(parents=True)
    csvs.mkdir(parents=True)
    for part, wnids in MINI.items():
        with open(csvs / f"{part}.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["filename", "label"])
            for c, wnid in enumerate(wnids):
                for i in range(PER_CLASS):
                    name = f"{wnid}{i + 1:08d}.jpg"
                    (images / name).write_bytes(jpeg(1000 * c + i))
                    out.writerow([name, wnid])


def write_cifar(root: Path) -> None:
    """<root>/cifar-100-python.tar.gz (Python-2-style pickles, channel-major rows) and both split sets."""
    rng = np.random.default_rng(0)
    fine = [c for _, c in CIFAR_ALL]
    coarse = list(CIFAR)

    def pickled(n: int) -> bytes:
        labels = [i for i in range(len(fine)) for _ in range(n)]
        return pickle.dumps(
            {
                b"data": rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8),
                b"fine_labels": labels,
                b"coarse_labels": [coarse.index(CIFAR_ALL[i][0]) for i in labels],
            },
            protocol=2,
        )

    meta = {b"fine_label_names": [c.encode() for c in fine], b"coarse_label_names": [s.encode() for s in coarse]}
    root.mkdir(parents=True, exist_ok=True)
    write_tgz(
        root / "cifar-100-python.tar.gz",
        {
            "cifar-100-python/meta": pickle.dumps(meta, protocol=2),
            "cifar-100-python/train": pickled(PER_CLASS - 5),
            "cifar-100-python/test": pickled(5),
        },
    )
    write_json_splits(root / "splits" / "cifar-fs", CIFAR_FS)
    write_json_splits(root / "splits" / "fc100", FC100)


def write_cub(root: Path) -> None:
    """<root>/cub/CUB_200_2011.tgz with CUB_200_2011/images/<class>/*.jpg, and <root>/splits/cub/*.json."""
    members = {"CUB_200_2011/README": b"stand-in"}
    for classes in CUB.values():
        for c in classes:
            for i in range(PER_CLASS):
                members[f"CUB_200_2011/images/{c}/{c.split('.')[1]}_{i:04d}.jpg"] = jpeg(5000 + 100 * int(c[:3]) + i)
    (root / "cub").mkdir(parents=True, exist_ok=True)
    write_tgz(root / "cub" / "CUB_200_2011.tgz", members)
    write_json_splits(root / "splits" / "cub", CUB)


def write_pacs(root: Path) -> None:
    """<root>/pacs/PACS.zip with PACS/<domain>/<class>/*.jpg."""
    (root / "pacs").mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "pacs" / "PACS.zip", "w") as z:
        for d, domain in enumerate(PACS_DOMAINS):
            for c, cls in enumerate(PACS_CLASSES):
                for i in range(PER_CLASS):
                    z.writestr(f"PACS/{domain}/{cls}/pic_{i:03d}.jpg", jpeg(9000 + 1000 * d + 100 * c + i))


@pytest.fixture(scope="module")
def std_data(tmp_path_factory) -> Path:
    """A data dir with stand-ins of mini-imagenet, cifar-fs, fc100, cub and pacs prepared."""
    root = tmp_path_factory.mktemp("std-source")
    for write in (write_mini, write_cifar, write_cub, write_pacs):
        write(root)
    data = tmp_path_factory.mktemp("std-prepared")
    for name in ("mini-imagenet", "cifar-fs", "fc100", "cub", "pacs"):
        prepare(name, source=root, data_dir=data, log=quiet)
    return data


class SmallNet(nn.Module):
    """A test-only backbone: pool to 3x3 and project. Keeps 84px runs cheap on two cores."""

    def __init__(self, in_channels: int, image_size: int, running_stats: bool = True):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.proj = nn.Linear(in_channels * 9, 16)
        self.out_dim = 16

    def forward(self, x):
        return torch.relu(self.proj(self.pool(x).flatten(1)))


@pytest.fixture(scope="module")
def small_backbone():
    BACKBONES.register("std-small", SmallNet)
    yield "std-small"
    BACKBONES.unregister("std-small")


# ---- the registry ------------------------------------------------------------------------------------


def test_every_protocol_uses_registered_datasets_and_a_fixed_test_set():
    for name, p in PROTOCOLS.items():
        for d in p.datasets:
            assert d in DATASETS, f"{name} uses unregistered dataset {d}"
        if p.setting in ("few-shot", "cross-domain"):
            assert p.test_episodes == 600 and p.episode_spec.queries == 15, name
            assert p.family, name
            assert p.setting in SETTINGS, name


def expected_splits(name: str) -> tuple[str, int, tuple, tuple, tuple]:
    """(family, image size, train, val, test) as (dataset, column, values) triples."""
    if "-to-" in name:
        target = name.split("-to-")[1].rsplit("-5w", 1)[0]
        test = (
            ("cub", "split", ("test",))
            if target == "cub"
            else ("pacs", "domain", (target.removeprefix("pacs-").replace("-", "_"),))
        )
        return "mini-imagenet", 84, ("mini-imagenet", "split", ("train",)), ("mini-imagenet", "split", ("val",)), test
    dataset = name.rsplit("-5w", 1)[0]
    return dataset, SIZES[dataset], *((dataset, "split", (part,)) for part in ("train", "val", "test"))


@pytest.mark.parametrize("name", NEW)
def test_standard_protocol_values(name):
    p = PROTOCOLS.get(name)
    family, size, train, val, test = expected_splits(name)
    assert p.setting == ("cross-domain" if "-to-" in name else "few-shot")
    assert p.family == family and p.image_size == size and p.channels == 3 and p.version == 1
    assert (p.episode_spec.ways, p.episode_spec.shots, p.episode_spec.queries) == (5, int(name[-2]), 15)
    assert p.is_single_stage and p.train_steps > 0
    for spec, (dataset, col, values) in ((p.train, train), (p.val, val), (p.test, test)):
        assert spec == SplitSpec(dataset, where=((col, values),))


def test_cross_domain_protocols_share_mini_imagenets_training():
    for shots in (1, 5):
        base = PROTOCOLS.get(f"mini-imagenet-5w{shots}s")
        key = SETTINGS.get("few-shot").training_key(base)
        cross = [p for n, p in PROTOCOLS.items() if n.startswith("mini-imagenet-to-") and n.endswith(f"5w{shots}s")]
        assert len(cross) == 5
        assert all(SETTINGS.get("cross-domain").training_key(p) == key for p in cross)


def test_cross_domain_protocols_plan_as_one_run(small_backbone):
    names = tuple(n for n in NEW if "-to-" in n and n.endswith("5w1s"))
    setting, protos, *_ = harness.plan(RunConfig("protonet", names, hparams={"backbone": small_backbone}))
    assert setting.name == "cross-domain" and [p.name for p in protos] == list(names)


# ---- the views and the fixed test episodes -----------------------------------------------------------


def classes_of(dataset: str, col: str, values: tuple) -> set[str]:
    if dataset == "pacs":
        return set(PACS_CLASSES)
    if dataset == "mini-imagenet":
        return {c for part in values for c in MINI[part]}
    if dataset == "cub":
        return {c for part in values for c in CUB[part]}
    if dataset == "cifar-fs":
        return {c for part in values for _, c in CIFAR_FS[part]}
    return {c for part in values for sup in FC100[part] for c in CIFAR[sup]}  # fc100


@pytest.mark.parametrize("name", NEW)
def test_views_select_the_right_classes_and_test_episodes_can_be_drawn(name, std_data):
    p = PROTOCOLS.get(name)
    _, _, *wanted = expected_splits(name)
    views = {}
    for split, (dataset, col, values) in zip(("train", "val", "test"), wanted):
        spec = getattr(p, split)
        view = build_view(load_store(spec.dataset, p.image_size, p.channels, str(std_data)), spec)
        assert set(view.classes) == classes_of(dataset, col, values), (name, split)
        assert view.counts.tolist() == [PER_CLASS] * len(view.classes)  # only the rows of that part or domain
        assert tuple(view.images.shape[1:]) == (3, p.image_size, p.image_size)
        views[split] = view
    assert not set(views["train"].classes) & (set(views["val"].classes) | set(views["test"].classes))
    index = fixed_episodes(views["test"], p.episode_spec, f"{p.name}:v{p.version}:test", p.test_episodes)
    assert len(index) == 600
    assert all(len(set(row)) == 5 for row in index.classes.tolist())
    ep = EpisodeSampler(views["test"], p.episode_spec).episodes(index, 0, 3)
    k = p.episode_spec.shots
    assert tuple(ep.support_x.shape) == (3, 5 * k, 3, p.image_size, p.image_size)
    assert tuple(ep.query_x.shape) == (3, 5 * 15, 3, p.image_size, p.image_size)


# ---- end to end ----------------------------------------------------------------------------------------


def small_hparams(backbone: str) -> dict:
    # 5-way training episodes: a paper recipe may ask for more ways than the stand-ins' five classes a part
    return {"backbone": backbone, "eval_batch": 2, "train_ways": 5}


def run(protocol: str, data: Path, tmp_path: Path, backbone: str):
    return harness.run(
        "protonet",
        protocol,
        episodes=2,
        train_steps=1,
        device="cpu",
        data_dir=str(data),
        results_dir=str(tmp_path / "results"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        progress=False,
        log=quiet,
        val_episodes=2,
        val_checks=1,
        hparams=small_hparams(backbone),
    )


@pytest.mark.parametrize(
    "name",
    [
        "mini-imagenet-5w1s",
        "cifar-fs-5w5s",
        "fc100-5w1s",
        "cub-5w5s",
        "mini-imagenet-to-cub-5w1s",
        "mini-imagenet-to-pacs-sketch-5w5s",
    ],
)
def test_protonet_end_to_end(name, std_data, small_backbone, tmp_path):
    record, path = run(name, std_data, tmp_path, small_backbone)
    p = PROTOCOLS.get(name)
    assert path is not None and path.is_file()
    assert record["protocol"]["name"] == name and record["setting"] == p.setting
    assert record["protocol"]["test_split"] == p.test.label
    assert record["summary"]["n_episodes"] == 2 and record["runs"][0]["n"] == 2
    assert record["runs"][0]["train_steps"] == 1
    assert record["runs"][0]["selection"]["split"] == p.val.label  # chosen on the validation split
    assert set(record["data"]) == set(p.datasets)


def test_few_shot_and_cross_domain_protocols_share_one_training_run(std_data, small_backbone, tmp_path):
    """mini-ImageNet 5-shot and every cross-domain protocol trained on it: one model per seed, scored and
    recorded by each protocol's own setting."""
    names = ("mini-imagenet-5w5s", *(n for n in NEW if "-to-" in n and n.endswith("5w5s")))
    cfg = RunConfig(
        "protonet",
        names,
        episodes=2,
        train_steps=1,
        device="cpu",
        data_dir=str(std_data),
        write=False,
        progress=False,
        val_episodes=2,
        val_checks=1,
        hparams=small_hparams(small_backbone),
    )
    out = harness.evaluate(cfg, None, quiet)
    assert [r["protocol"]["name"] for r, _ in out] == list(names)
    assert all(r["runs"][0]["trained_with"] == list(names) for r, _ in out)
    assert len({r["runs"][0]["train_time_s"] for r, _ in out}) == 1  # one training run served them all
    assert [r["setting"] for r, _ in out] == ["few-shot", *["cross-domain"] * (len(names) - 1)]
