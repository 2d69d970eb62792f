"""mini-ImageNet, CIFAR-FS, FC100 and CUB loaders, on tiny stand-ins built in the official layouts.

The real image data is not available to the tests; its split files are (../shared/data/splits), and
the checks on those skip when that folder is absent.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import benchmark.data.extra  # noqa: F401  (registers the datasets)
from benchmark.data import DataError, prepare
from benchmark.data.extra import read_ravi_csv, read_split_json

SHARED_SPLITS = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits"
if not SHARED_SPLITS.is_dir():
    SHARED_SPLITS = Path("/work/shared/data/splits")
SPLITS = ("train", "val", "test")


def quiet(_msg: str) -> None:
    pass


def jpeg(seed: int, size: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def write_tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def prepare_twice(name: str, source: Path, data_dir: Path):
    first = prepare(name, source=source, data_dir=data_dir, log=quiet)
    messages: list[str] = []
    again = prepare(name, source=source, data_dir=data_dir, log=messages.append)
    assert again.manifest == first.manifest
    assert any("nothing to do" in m for m in messages)
    return first


# --- mini-ImageNet -----------------------------------------------------------------------------------

MINI = {"train": ["n01532829", "n01558993", "n01704323"], "val": ["n01855672"], "test": ["n01930112"]}


def write_mini(folder: Path, csv_dir: Path, per_class: int = 2) -> None:
    images = folder / "images"
    images.mkdir(parents=True)
    csv_dir.mkdir(parents=True, exist_ok=True)
    seed = 0
    for split, wnids in MINI.items():
        with open(csv_dir / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            for wnid in wnids:
                for i in range(1, per_class + 1):
                    fn = f"{wnid}{i:08d}.jpg"
                    (images / fn).write_bytes(jpeg(seed))
                    seed += 1
                    w.writerow([fn, wnid])


def check_mini(prepared) -> None:
    ds = prepared.dataset()
    assert len(ds) == 10 and prepared.manifest["classes"] == 5
    assert set(ds.column_names) >= {"image", "label", "split"}
    assert Counter(ds["split"]) == {"train": 6, "val": 2, "test": 2}
    for split, wnids in MINI.items():
        assert {lab for lab, s in zip(ds["label"], ds["split"]) if s == split} == set(wnids)
    assert ds[0]["image"].size == (8, 8)


def test_mini_imagenet_ravi_layout(tmp_path):
    src = tmp_path / "ravi"
    write_mini(src, src)
    check_mini(prepare_twice("mini-imagenet", src, tmp_path / "prepared"))


def test_mini_imagenet_shared_layout(tmp_path):
    # <root>/mini-imagenet/images beside <root>/splits/mini-imagenet/ravi/*.csv, as ../shared/data is laid out.
    root = tmp_path / "root"
    write_mini(root / "mini-imagenet", root / "splits" / "mini-imagenet" / "ravi")
    check_mini(prepare("mini-imagenet", source=root, data_dir=tmp_path / "prepared", log=quiet))
    # Pointing at the dataset's own folder finds the splits one level up.
    check_mini(prepare("mini-imagenet", source=root / "mini-imagenet", data_dir=tmp_path / "p2", log=quiet))


def test_mini_imagenet_missing_image_is_named(tmp_path):
    src = tmp_path / "ravi"
    write_mini(src, src)
    (src / "images" / "n0185567200000002.jpg").unlink()
    with pytest.raises(DataError, match="n0185567200000002.jpg"):
        prepare("mini-imagenet", source=src, data_dir=tmp_path / "prepared", log=quiet)
    assert not (tmp_path / "prepared" / "mini-imagenet").exists()


def test_mini_imagenet_missing_split_files(tmp_path):
    src = tmp_path / "ravi"
    write_mini(src, src)
    (src / "test.csv").unlink()
    with pytest.raises(DataError, match="test.csv"):
        prepare("mini-imagenet", source=src, data_dir=tmp_path / "prepared", log=quiet)


# --- CIFAR-100: CIFAR-FS and FC100 -------------------------------------------------------------------

CIFAR_CLASSES = {  # a handful of the real CIFAR-100 superclasses and classes
    "aquatic_mammals": ["dolphin", "whale"],
    "fish": ["trout", "shark"],
    "people": ["baby", "girl"],
    "trees": ["oak_tree", "maple_tree"],
}
CIFAR_FS_SPLITS = {
    "train": [["aquatic_mammals", "dolphin"], ["fish", "trout"], ["people", "girl"], ["trees", "oak_tree"]],
    "val": [["aquatic_mammals", "whale"], ["people", "baby"]],
    "test": [["fish", "shark"], ["trees", "maple_tree"]],
}
FC100_SPLITS = {"train": ["aquatic_mammals", "fish"], "val": ["people"], "test": ["trees"]}


def cifar_pixels(fine: int, i: int) -> np.ndarray:
    """A 32x32 RGB image whose colour encodes (class, index), so the decoded PNG can be checked."""
    px = np.zeros((32, 32, 3), np.uint8)
    px[..., 0], px[..., 1], px[..., 2] = 10 * fine, i, 200
    px[0, 0] = (1, 2, 3)  # not symmetric, so a wrong transpose shows
    return px


def write_cifar_archive(path: Path, extra_pickle: bytes | None = None) -> Path:
    fine_names = [c for cs in CIFAR_CLASSES.values() for c in cs]
    coarse_names = list(CIFAR_CLASSES)
    coarse_of = {c: coarse_names.index(s) for s, cs in CIFAR_CLASSES.items() for c in cs}

    def part(per_class: int) -> dict:
        data, fine, coarse = [], [], []
        for f, name in enumerate(fine_names):
            for i in range(per_class):
                # Official rows are channel-major: 1024 red, 1024 green, 1024 blue.
                data.append(cifar_pixels(f, i).transpose(2, 0, 1).reshape(-1))
                fine.append(f)
                coarse.append(coarse_of[name])
        return {
            b"filenames": [b"x.png"] * len(fine),
            b"batch_label": b"batch",
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": np.stack(data),
        }

    meta = {
        b"fine_label_names": [n.encode() for n in fine_names],
        b"coarse_label_names": [n.encode() for n in coarse_names],
    }
    # Protocol 2 and bytes keys, like the Python 2 pickles of the official archive.
    members = {
        f"cifar-100-python/{k}": pickle.dumps(v, protocol=2)
        for k, v in (("meta", meta), ("train", part(2)), ("test", part(1)))
    }
    if extra_pickle is not None:
        members["cifar-100-python/train"] = extra_pickle
    members["cifar-100-python/file.txt~"] = b"noise"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tgz(path, members)


def write_json_splits(folder: Path, splits: dict[str, list]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for s, items in splits.items():
        (folder / f"{s}.json").write_text(json.dumps(items))


@pytest.fixture()
def cifar_root(tmp_path):
    """<root>/cifar-100-python.tar.gz shared by both datasets, splits under <root>/splits/<name>/."""
    root = tmp_path / "root"
    write_cifar_archive(root / "cifar-100-python.tar.gz")
    write_json_splits(root / "splits" / "cifar-fs", CIFAR_FS_SPLITS)
    write_json_splits(root / "splits" / "fc100", FC100_SPLITS)
    return root


def test_cifar_fs(cifar_root, tmp_path):
    prepared = prepare_twice("cifar-fs", cifar_root, tmp_path / "prepared")
    ds = prepared.dataset()
    assert len(ds) == 24 and prepared.manifest["classes"] == 8
    assert set(ds.column_names) >= {"image", "label", "superclass", "split"}
    split_of = {c: s for s, pairs in CIFAR_FS_SPLITS.items() for _, c in pairs}
    assert all(split_of[lab] == s for lab, s in zip(ds["label"], ds["split"]))
    assert Counter(ds["split"]) == {"train": 12, "val": 6, "test": 6}
    super_of = {c: s for s, cs in CIFAR_CLASSES.items() for c in cs}
    assert all(super_of[lab] == s for lab, s in zip(ds["label"], ds["superclass"]))
    fine_names = [c for cs in CIFAR_CLASSES.values() for c in cs]
    row = ds[3]  # train pickle, class 1 ("whale"), image 1
    assert row["label"] == "whale"
    img = row["image"]
    assert img.format == "PNG" and img.mode == "RGB" and img.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(img), cifar_pixels(fine_names.index("whale"), 1))


def test_changed_split_file_makes_prepare_rebuild(cifar_root, tmp_path):
    first = prepare_twice("cifar-fs", cifar_root, tmp_path / "prepared")
    assert any(k.startswith("split:") for k in first.manifest["source_sha256"])
    val_before = Counter(first.dataset()["split"])["val"]
    moved = {s: list(v) for s, v in CIFAR_FS_SPLITS.items()}
    moved["val"].append(moved["train"].pop())  # one class changes sides: a different dataset
    write_json_splits(cifar_root / "splits" / "cifar-fs", moved)
    messages: list[str] = []
    again = prepare("cifar-fs", source=cifar_root, data_dir=tmp_path / "prepared", log=messages.append)
    assert not any("nothing to do" in m for m in messages)
    assert again.fingerprint != first.fingerprint
    assert Counter(again.dataset()["split"])["val"] == val_before + 3


def test_fc100(cifar_root, tmp_path):
    prepared = prepare_twice("fc100", cifar_root, tmp_path / "prepared")
    ds = prepared.dataset()
    assert len(ds) == 24
    split_of = {sup: s for s, sups in FC100_SPLITS.items() for sup in sups}
    assert all(split_of[sup] == s for sup, s in zip(ds["superclass"], ds["split"]))
    assert Counter(ds["split"]) == {"train": 12, "val": 6, "test": 6}
    assert set(ds["label"]) == {c for cs in CIFAR_CLASSES.values() for c in cs}


def test_cifar_splits_beside_archive(tmp_path):
    src = tmp_path / "cifar-fs"
    write_cifar_archive(src / "cifar-100-python.tar.gz")
    write_json_splits(src, CIFAR_FS_SPLITS)
    assert len(prepare("cifar-fs", source=src, data_dir=tmp_path / "prepared", log=quiet).dataset()) == 24


@pytest.mark.parametrize("name", ["cifar-fs", "fc100"])
def test_cifar_truncated_archive(cifar_root, tmp_path, name):
    truncate(cifar_root / "cifar-100-python.tar.gz")
    with pytest.raises(DataError, match="corrupt or truncated"):
        prepare(name, source=cifar_root, data_dir=tmp_path / "prepared", log=quiet)
    assert not (tmp_path / "prepared" / name).exists()


def test_cifar_not_an_archive(cifar_root, tmp_path):
    (cifar_root / "cifar-100-python.tar.gz").write_bytes(b"<html>Not found</html>")
    with pytest.raises(DataError, match="corrupt or truncated"):
        prepare("cifar-fs", source=cifar_root, data_dir=tmp_path / "prepared", log=quiet)


def test_cifar_split_class_missing_from_data(cifar_root, tmp_path):
    write_json_splits(
        cifar_root / "splits" / "cifar-fs",
        {**CIFAR_FS_SPLITS, "test": CIFAR_FS_SPLITS["test"] + [["reptiles", "turtle"]]},
    )
    with pytest.raises(DataError, match="turtle"):
        prepare("cifar-fs", source=cifar_root, data_dir=tmp_path / "prepared", log=quiet)
    write_json_splits(cifar_root / "splits" / "fc100", {**FC100_SPLITS, "val": ["people", "insects"]})
    with pytest.raises(DataError, match="insects"):
        prepare("fc100", source=cifar_root, data_dir=tmp_path / "prepared", log=quiet)


def test_cifar_fs_wrong_superclass(cifar_root, tmp_path):
    write_json_splits(
        cifar_root / "splits" / "cifar-fs", {**CIFAR_FS_SPLITS, "val": [["fish", "whale"], ["people", "baby"]]}
    )
    with pytest.raises(DataError, match="whale"):
        prepare("cifar-fs", source=cifar_root, data_dir=tmp_path / "prepared", log=quiet)


def test_cifar_python2_pickle_format():
    """The official pickles come from Python 2: py2 strings, numpy.core names. Hand-assembled here
    (protocol 2 opcodes, as cPickle writes them) since Python 3 cannot write that format."""
    from benchmark.data.cifar import _unpickle

    raw = bytes(range(6))
    py2 = (
        b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03"
        b"K\x00\x85U\x01b\x87Rq\x04(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x06"
        + raw
        + b"tbU\x0bfine_labelsq\x07]q\x08(K\x01K\x02eu."
    )
    d = _unpickle(py2, "test")
    assert d[b"fine_labels"] == [1, 2]
    np.testing.assert_array_equal(d[b"data"], np.arange(6, dtype=np.uint8).reshape(2, 3))


class _Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_cifar_pickle_may_not_run_code(tmp_path, capsys):
    root = tmp_path / "root"
    write_cifar_archive(root / "cifar-100-python.tar.gz", extra_pickle=pickle.dumps({b"data": _Evil()}))
    write_json_splits(root, CIFAR_FS_SPLITS)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        prepare("cifar-fs", source=root, data_dir=tmp_path / "prepared", log=quiet)
    assert "pickle code ran" not in capsys.readouterr().out


# --- CUB-200-2011 -------------------------------------------------------------------------------------

CUB = {
    "train": ["001.Black_footed_Albatross", "003.Sooty_Albatross"],
    "val": ["002.Laysan_Albatross"],
    "test": ["004.Groove_billed_Ani"],
}


def write_cub(root: Path, per_class: int = 3) -> Path:
    members = {
        "CUB_200_2011/README": b"readme",
        "CUB_200_2011/classes.txt": b"1 001.Black_footed_Albatross\n",
        "CUB_200_2011/attributes/certainties.txt": b"1 not visible\n",
    }
    seed = 100
    for classes in CUB.values():
        for c in classes:
            for i in range(per_class):
                members[f"CUB_200_2011/images/{c}/{c.split('.')[1]}_{i:04d}_{seed}.jpg"] = jpeg(seed)
                seed += 1
    (root / "cub").mkdir(parents=True, exist_ok=True)
    write_json_splits(root / "splits" / "cub", CUB)
    return write_tgz(root / "cub" / "CUB_200_2011.tgz", members)


def test_cub(tmp_path):
    root = tmp_path / "root"
    write_cub(root)
    prepared = prepare_twice("cub", root, tmp_path / "prepared")
    ds = prepared.dataset()
    assert len(ds) == 12 and prepared.manifest["classes"] == 4
    assert set(ds.column_names) >= {"image", "label", "split"}
    split_of = {c: s for s, cs in CUB.items() for c in cs}
    assert all(split_of[lab] == s for lab, s in zip(ds["label"], ds["split"]))
    assert Counter(ds["split"]) == {"train": 6, "val": 3, "test": 3}
    assert ds[0]["image"].format == "JPEG"


def test_cub_truncated_archive(tmp_path):
    root = tmp_path / "root"
    truncate(write_cub(root))
    with pytest.raises(DataError, match="corrupt or truncated"):
        prepare("cub", source=root, data_dir=tmp_path / "prepared", log=quiet)


def test_cub_split_class_missing_from_data(tmp_path):
    root = tmp_path / "root"
    write_cub(root)
    write_json_splits(root / "splits" / "cub", {**CUB, "test": CUB["test"] + ["200.Common_Yellowthroat"]})
    with pytest.raises(DataError, match="200.Common_Yellowthroat"):
        prepare("cub", source=root, data_dir=tmp_path / "prepared", log=quiet)


# --- the real split files ------------------------------------------------------------------------------

needs_shared = pytest.mark.skipif(not SHARED_SPLITS.is_dir(), reason=f"{SHARED_SPLITS} is absent")


def class_sets(counts: dict[str, set]) -> tuple[int, ...]:
    sets = [counts[s] for s in SPLITS]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), "splits overlap"
    return tuple(len(s) for s in sets)


@needs_shared
def test_real_mini_imagenet_splits():
    rows = {s: read_ravi_csv(SHARED_SPLITS / "mini-imagenet" / "ravi" / f"{s}.csv") for s in SPLITS}
    assert class_sets({s: {lab for _, lab in r} for s, r in rows.items()}) == (64, 16, 20)
    assert all(len(r) == 600 * n for r, n in zip(rows.values(), (64, 16, 20)))


@needs_shared
def test_real_cifar_fs_and_fc100_splits():
    pairs = {s: read_split_json(SHARED_SPLITS / "cifar-fs" / f"{s}.json", pairs=True) for s in SPLITS}
    assert class_sets({s: {c for _, c in p} for s, p in pairs.items()}) == (64, 16, 20)
    # CIFAR-FS names every class with its superclass, which gives FC100's fine classes.
    fine_of: dict[str, set] = {}
    for p in pairs.values():
        for sup, c in p:
            fine_of.setdefault(sup, set()).add(c)
    assert len(fine_of) == 20 and all(len(cs) == 5 for cs in fine_of.values())
    supers = {s: set(read_split_json(SHARED_SPLITS / "fc100" / f"{s}.json")) for s in SPLITS}
    assert class_sets(supers) == (12, 4, 4)
    assert [sum(len(fine_of[sup]) for sup in supers[s]) for s in SPLITS] == [60, 20, 20]


@needs_shared
def test_real_cub_splits():
    classes = {s: set(read_split_json(SHARED_SPLITS / "cub" / f"{s}.json")) for s in SPLITS}
    assert class_sets(classes) == (100, 50, 50)
    assert all(c[:3].isdigit() and c[3] == "." for cs in classes.values() for c in cs)
