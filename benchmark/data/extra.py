"""Builders for the few-shot datasets read from their usual public distributions:
mini-ImageNet (Ravi & Larochelle layout), CIFAR-FS and FC100 (both from the CIFAR-100 python archive)
and CUB-200-2011.

Each returns a `datasets.Dataset` with `image` (encoded bytes), `label` (class name) and `split`
(train/val/test, from the standard class split files), plus `superclass` for the CIFAR-100 datasets.

The split files need not sit in the dataset's source folder: a builder looks for them beside the
data first, then under `splits/<dataset>/` next to it or one level up, which is how the benchmark's
shared data folder holds them (`<root>/splits/mini-imagenet/ravi/train.csv`, ...). Because
`resolve_source` resolves only what `DatasetSpec.files` lists, split files found this way are not in
the manifest's source checksums; a spec that lists them in `files` gets them from there instead.
"""
from __future__ import annotations

import codecs
import csv
import functools
import gzip
import io
import json
import os
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from .builders import IMAGE_SUFFIXES, image_features, make_dataset
from .prepare import DATASETS, DataError, DatasetSpec

SPLITS = ("train", "val", "test")


def _listing(names: Iterable[str], limit: int = 8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --- split files ---------------------------------------------------------------------------------

def find_split_files(files: dict[str, Path], data_key: str, name: str, split_dir: str,
                     ext: str) -> dict[str, Path]:
    """The train/val/test split files for `name`, by split."""
    wanted = {s: f"{s}.{ext}" for s in SPLITS}
    if all(w in files for w in wanted.values()):
        return {s: files[w] for s, w in wanted.items()}
    here = files[data_key].parent
    places: list[Path] = []
    for place in (here, here / name, here / "splits" / split_dir, here.parent / "splits" / split_dir):
        if place not in places:
            places.append(place)
    for place in places:
        found = {s: place / w for s, w in wanted.items()}
        present = [s for s, p in found.items() if p.is_file()]
        if len(present) == len(SPLITS):
            return found
        if present:
            # A partial set is more likely a bad copy than another dataset's files: say so.
            lacking = [wanted[s] for s in SPLITS if s not in present]
            raise DataError(f"{name}: {place} holds {', '.join(wanted[s] for s in present)} but not "
                            f"{', '.join(lacking)}. Copy all three split files there.")
    raise DataError(f"{name}: the split files {', '.join(wanted.values())} were not found; looked in "
                    f"{', '.join(str(p) for p in places)}. Put them beside {files[data_key].name}, or use "
                    f"a source folder whose splits/{split_dir}/ holds them (as the benchmark's shared data does).")


def read_ravi_csv(path: Path) -> list[tuple[str, str]]:
    """(filename, wnid) rows of a Ravi & Larochelle split csv (header `filename,label`)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"filename", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected a csv with header 'filename,label', found {reader.fieldnames}.")
        rows = [(r["filename"].strip(), r["label"].strip()) for r in reader if r.get("filename")]
    if not rows:
        raise DataError(f"{path} lists no images.")
    return rows


def read_split_json(path: Path, pairs: bool = False) -> list:
    """A JSON split file: a list of class names, or with `pairs` a list of [superclass, class]."""
    try:
        items = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}).") from None
    if pairs:
        ok = isinstance(items, list) and all(
            isinstance(i, list) and len(i) == 2 and all(isinstance(x, str) for x in i) for i in items)
        shape = "a list of [superclass, class] pairs"
    else:
        ok = isinstance(items, list) and all(isinstance(i, str) for i in items)
        shape = "a list of class names"
    if not ok or not items:
        example = '[["fish", "trout"], ...]' if pairs else '["trout", ...]'
        raise DataError(f"{path}: expected {shape}, e.g. {example}.")
    return [tuple(i) for i in items] if pairs else items


def assign_splits(by_split: dict[str, list[str]], present: Iterable[str], name: str,
                  what: str = "class") -> dict[str, str]:
    """Class -> split, checking the split files against each other and against the data."""
    split_of: dict[str, str] = {}
    for split in SPLITS:
        for c in by_split[split]:
            if split_of.get(c, split) != split:
                raise DataError(f"{name}: {what} {c!r} is in both the {split_of[c]} and the {split} split "
                                f"files; the split files are damaged.")
            split_of[c] = split
    present = set(present)
    missing = set(split_of) - present
    if missing:
        raise DataError(f"{name}: the split files name {len(missing)} {what}(es) the data lacks: "
                        f"{_listing(missing)}. The data is incomplete or not the official distribution.")
    stray = present - set(split_of)
    if stray:
        raise DataError(f"{name}: the data holds {len(stray)} {what}(es) no split file names: "
                        f"{_listing(stray)}. The split files do not match this data.")
    return split_of


# --- archives --------------------------------------------------------------------------------------

def tar_members(path: Path, keep: Callable[[PurePosixPath], bool]) -> Iterator[tuple[PurePosixPath, bytes]]:
    """(member path, bytes) of each regular member of a .tar.gz that `keep` accepts, in archive order.

    Read as one stream, and the gzip stream is drained to its end so that its CRC and length are
    checked: a truncated download fails here instead of yielding a dataset without its last classes.
    """
    try:
        with gzip.open(path, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for member in tar:
                    p = PurePosixPath(member.name)
                    if not member.isfile() or not keep(p):
                        continue
                    stream = tar.extractfile(member)
                    if stream is None:
                        raise EOFError(f"member {member.name} has no data")
                    data = stream.read()
                    if len(data) != member.size:
                        raise EOFError(f"member {member.name} is cut short")
                    yield p, data
            while gz.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{path} is not a readable .tar.gz archive ({type(e).__name__}: {e}). It is corrupt "
                        f"or truncated: download it again.") from None


def _image_member(p: PurePosixPath) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and "__MACOSX" not in p.parts


# --- mini-ImageNet -----------------------------------------------------------------------------------

def build_mini_imagenet(files: dict[str, Path]):
    images = files["images"]
    if not images.is_dir():
        raise DataError(f"mini-imagenet: {images} should be the folder of all the jpgs the split csvs name.")
    split_files = find_split_files(files, "images", "mini-imagenet", "mini-imagenet/ravi", "csv")
    entries = {s: read_ravi_csv(p) for s, p in split_files.items()}
    assign_splits({s: sorted({lab for _, lab in rows}) for s, rows in entries.items()},
                  {lab for rows in entries.values() for _, lab in rows}, "mini-imagenet")
    seen: set[str] = set()
    dup: set[str] = set()
    for rows in entries.values():
        for fn, _ in rows:
            (dup if fn in seen else seen).add(fn)
    if dup:
        raise DataError(f"mini-imagenet: the split csvs list {len(dup)} image(s) more than once: {_listing(dup)}.")
    # One listing instead of 60,000 stats; also rules out names that point outside images/.
    available = set(os.listdir(images))
    absent = [fn for fn in sorted(seen) if fn not in available]
    if absent:
        raise DataError(f"mini-imagenet: {len(absent)} image(s) named in the split csvs are missing from "
                        f"{images}: {_listing(absent)}. The images folder is incomplete: copy it again.")
    columns: dict[str, list] = {"image": [], "label": [], "split": []}
    for split in SPLITS:
        for fn, label in entries[split]:
            columns["image"].append({"bytes": (images / fn).read_bytes(), "path": None})
            columns["label"].append(label)
            columns["split"].append(split)
    return make_dataset(columns, image_features(split="string"))


# --- CIFAR-100: CIFAR-FS and FC100 -----------------------------------------------------------------

CIFAR_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


@functools.lru_cache(maxsize=1)
def _pickle_globals() -> dict[tuple[str, str], object]:
    import numpy as np
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    # The official pickles were written by Python 2 (numpy.core...); re-pickled copies may name numpy._core.
    return {("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,  # type: ignore[attr-defined]
            ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,  # type: ignore[attr-defined]
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only.

    The archive's sha256 is recorded in the manifest (and checked against SHA256SUMS where one is
    shipped), but a pickle can run arbitrary code, so a tampered archive must not get that far either.
    """

    def find_class(self, module: str, name: str):
        try:
            return _pickle_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR-100 pickles hold only "
                                         f"dicts, lists and numpy arrays") from None


def _unpickle(data: bytes, where: str) -> dict:
    try:
        # encoding="bytes": the pickles come from Python 2, their str keys and array buffers stay bytes.
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # unpickling fails in many types; the user needs the cause and the fix
        raise DataError(f"{where} is not a CIFAR-100 pickle ({type(e).__name__}: {e}). The archive is "
                        f"corrupt or not the official python version: download it again.") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} holds a {type(obj).__name__}, not the dict of the official CIFAR-100 pickles.")
    return obj


def read_cifar100(path: Path) -> dict[str, list]:
    """All 60,000 images of the python archive (train then test): pixels (HxWxC), fine and coarse names."""
    import numpy as np
    parts = {}
    for p, data in tar_members(path, lambda p: p.parts[-2:-1] == ("cifar-100-python",)
                               and p.name in ("train", "test", "meta")):
        parts[p.name] = _unpickle(data, f"{path}:{p}")
    missing = [m for m in ("meta", "train", "test") if m not in parts]
    if missing:
        raise DataError(f"{path} lacks {', '.join('cifar-100-python/' + m for m in missing)}; it is not the "
                        f"CIFAR-100 python archive ({CIFAR_URL}).")
    try:
        fine_names = [n.decode() for n in parts["meta"][b"fine_label_names"]]
        coarse_names = [n.decode() for n in parts["meta"][b"coarse_label_names"]]
        out: dict[str, list] = {"pixels": [], "label": [], "superclass": []}
        for split in ("train", "test"):
            d = parts[split]
            pixels = np.asarray(d[b"data"], dtype=np.uint8)
            fine, coarse = list(d[b"fine_labels"]), list(d[b"coarse_labels"])
            if pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32 or not len(pixels) == len(fine) == len(coarse):
                raise ValueError(f"{split}: data of shape {pixels.shape} for {len(fine)} labels")
            # Rows are channel-major (1024 red, 1024 green, 1024 blue); images want HxWxC.
            out["pixels"].extend(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            out["label"].extend(fine_names[i] for i in fine)
            out["superclass"].extend(coarse_names[i] for i in coarse)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unexpected CIFAR-100 pickle contents ({type(e).__name__}: {e}); it is not "
                        f"the official python archive ({CIFAR_URL}).") from None
    return out


def _png(pixels) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _cifar_dataset(cifar: dict[str, list], split_of_row: list[str]):
    rows = {"image": [{"bytes": _png(px), "path": None} for px in cifar["pixels"]],
            "label": cifar["label"], "superclass": cifar["superclass"], "split": split_of_row}
    return make_dataset(rows, image_features(superclass="string", split="string"))


def _superclass_of(cifar: dict[str, list], name: str) -> dict[str, str]:
    sup: dict[str, str] = {}
    for label, superclass in zip(cifar["label"], cifar["superclass"]):
        if sup.setdefault(label, superclass) != superclass:
            raise DataError(f"{name}: class {label!r} appears under superclasses {sup[label]!r} and "
                            f"{superclass!r}; the archive is not the official CIFAR-100.")
    return sup


def build_cifar_fs(files: dict[str, Path]):
    split_files = find_split_files(files, CIFAR_ARCHIVE, "cifar-fs", "cifar-fs", "json")
    pairs = {s: read_split_json(p, pairs=True) for s, p in split_files.items()}
    cifar = read_cifar100(files[CIFAR_ARCHIVE])
    sup = _superclass_of(cifar, "cifar-fs")
    split_of = assign_splits({s: [c for _, c in ps] for s, ps in pairs.items()}, sup, "cifar-fs")
    wrong = [f"{c} ({s!r} in the split file, {sup[c]!r} in the data)"
             for ps in pairs.values() for s, c in ps if sup[c] != s]
    if wrong:
        raise DataError(f"cifar-fs: the split files give the wrong superclass for {_listing(wrong)}.")
    return _cifar_dataset(cifar, [split_of[c] for c in cifar["label"]])


def build_fc100(files: dict[str, Path]):
    split_files = find_split_files(files, CIFAR_ARCHIVE, "fc100", "fc100", "json")
    supers = {s: read_split_json(p) for s, p in split_files.items()}
    cifar = read_cifar100(files[CIFAR_ARCHIVE])
    split_of = assign_splits(supers, cifar["superclass"], "fc100", what="superclass")
    return _cifar_dataset(cifar, [split_of[s] for s in cifar["superclass"]])


# --- CUB-200-2011 -------------------------------------------------------------------------------------

CUB_ARCHIVE = "CUB_200_2011.tgz"


def build_cub(files: dict[str, Path]):
    split_files = find_split_files(files, CUB_ARCHIVE, "cub", "cub", "json")
    classes = {s: read_split_json(p) for s, p in split_files.items()}
    found = sorted((p.parts[-2], p.name, data) for p, data in tar_members(
        files[CUB_ARCHIVE], lambda p: len(p.parts) >= 3 and p.parts[-3] == "images" and _image_member(p)))
    if not found:
        raise DataError(f"{files[CUB_ARCHIVE]} holds no CUB_200_2011/images/<class>/<file>.jpg members; it is "
                        f"not the CUB-200-2011 archive.")
    split_of = assign_splits(classes, {c for c, _, _ in found}, "cub")
    rows: dict[str, list] = {"image": [{"bytes": data, "path": None} for _, _, data in found],
                             "label": [c for c, _, _ in found], "split": [split_of[c] for c, _, _ in found]}
    return make_dataset(rows, image_features(split="string"))


def _splits_of(data_key: str, name: str, split_dir: str, ext: str):
    def found(files: dict[str, Path]) -> dict[str, Path]:
        return {f"split:{s}": p for s, p in find_split_files(files, data_key, name, split_dir, ext).items()}
    return found


DATASETS.register("mini-imagenet", DatasetSpec(
    name="mini-imagenet",
    auxiliary=_splits_of("images", "mini-imagenet", "mini-imagenet/ravi", "csv"),
    description="mini-ImageNet (Vinyals et al. 2016), Ravi & Larochelle split: 100 ImageNet classes x 600 "
                "images, 64/16/20 train/val/test classes",
    files=("images",),  # ImageNet's terms allow no public download
    build=build_mini_imagenet,
    columns=("image", "label", "split"),
))
DATASETS.register("cifar-fs", DatasetSpec(
    name="cifar-fs",
    auxiliary=_splits_of(CIFAR_ARCHIVE, "cifar-fs", "cifar-fs", "json"),
    description="CIFAR-FS (Bertinetto et al. 2019): all 60,000 CIFAR-100 images, 64/16/20 train/val/test classes",
    files=(CIFAR_ARCHIVE,),
    urls={CIFAR_ARCHIVE: CIFAR_URL},
    build=build_cifar_fs,
    columns=("image", "label", "superclass", "split"),
))
DATASETS.register("fc100", DatasetSpec(
    name="fc100",
    auxiliary=_splits_of(CIFAR_ARCHIVE, "fc100", "fc100", "json"),
    description="FC100 (Oreshkin et al. 2018): all 60,000 CIFAR-100 images split by superclass, 12/4/4 "
                "superclasses = 60/20/20 classes",
    files=(CIFAR_ARCHIVE,),
    urls={CIFAR_ARCHIVE: CIFAR_URL},
    build=build_fc100,
    columns=("image", "label", "superclass", "split"),
))
DATASETS.register("cub", DatasetSpec(
    name="cub",
    auxiliary=_splits_of(CUB_ARCHIVE, "cub", "cub", "json"),
    description="CUB-200-2011 (Wah et al. 2011): 11,788 images of 200 bird species, 100/50/50 "
                "train/val/test classes",
    files=(CUB_ARCHIVE,),
    build=build_cub,  # the Caltech data page is the source; its download link is not guaranteed stable
    columns=("image", "label", "split"),
))
