"""Builders for the few-shot datasets read from their usual public distributions: mini-ImageNet
(Ravi & Larochelle layout) and CUB-200-2011 here, CIFAR-FS and FC100 in cifar.py; and the split-file
and archive helpers they share.

Each returns a `datasets.Dataset` with `image` (encoded bytes), `label` (class name) and `split`
(train/val/test, from the standard class split files).

The split files need not sit in the dataset's source folder: a builder looks for them beside the
data first, then under `splits/<dataset>/` next to it or one level up, which is how the benchmark's
shared data folder holds them (`<root>/splits/mini-imagenet/ravi/train.csv`, ...). Because
`resolve_source` resolves only what `DatasetSpec.files` lists, split files found this way are not in
the manifest's source checksums; a spec that lists them in `files` gets them from there instead.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

from .builders import IMAGE_SUFFIXES, image_features, make_dataset
from .prepare import DATASETS, DataError, DatasetSpec, check_sizes, check_total

SPLITS = ("train", "val", "test")


def _listing(names: Iterable[str], limit: int = 8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --- split files ---------------------------------------------------------------------------------


def find_split_files(files: dict[str, Path], data_key: str, name: str, split_dir: str, ext: str) -> dict[str, Path]:
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
            raise DataError(
                f"{name}: {place} holds {', '.join(wanted[s] for s in present)} but not "
                f"{', '.join(lacking)}. Copy all three split files there."
            )
    raise DataError(
        f"{name}: the split files {', '.join(wanted.values())} were not found; looked in "
        f"{', '.join(str(p) for p in places)}. Put them beside {files[data_key].name}, or use "
        f"a source folder whose splits/{split_dir}/ holds them (as the benchmark's shared data does)."
    )


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
            isinstance(i, list) and len(i) == 2 and all(isinstance(x, str) for x in i) for i in items
        )
        shape = "a list of [superclass, class] pairs"
    else:
        ok = isinstance(items, list) and all(isinstance(i, str) for i in items)
        shape = "a list of class names"
    if not ok or not items:
        example = '[["fish", "trout"], ...]' if pairs else '["trout", ...]'
        raise DataError(f"{path}: expected {shape}, e.g. {example}.")
    return [tuple(i) for i in items] if pairs else items


def assign_splits(
    by_split: dict[str, list[str]], present: Iterable[str], name: str, what: str = "class"
) -> dict[str, str]:
    """Class -> split, checking the split files against each other and against the data."""
    split_of: dict[str, str] = {}
    for split in SPLITS:
        for c in by_split[split]:
            if split_of.get(c, split) != split:
                raise DataError(
                    f"{name}: {what} {c!r} is in both the {split_of[c]} and the {split} split "
                    f"files; the split files are damaged."
                )
            split_of[c] = split
    present = set(present)
    missing = set(split_of) - present
    if missing:
        raise DataError(
            f"{name}: the split files name {len(missing)} {what}(es) the data lacks: "
            f"{_listing(missing)}. The data is incomplete or not the official distribution."
        )
    stray = present - set(split_of)
    if stray:
        raise DataError(
            f"{name}: the data holds {len(stray)} {what}(es) no split file names: "
            f"{_listing(stray)}. The split files do not match this data."
        )
    return split_of


# --- archives --------------------------------------------------------------------------------------


def tar_members(
    path: Path, keep: Callable[[PurePosixPath], bool], max_total: int = 8 << 30
) -> Iterator[tuple[PurePosixPath, bytes]]:
    """(member path, bytes) of each regular member of a .tar.gz that `keep` accepts, in archive order.

    Read as one stream, and the gzip stream is drained to its end so that its CRC and length are
    checked: a truncated download fails here instead of yielding a dataset without its last classes.
    """
    try:
        with gzip.open(path, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                total = 0
                for member in tar:
                    p = PurePosixPath(member.name)
                    if not member.isfile() or not keep(p):
                        continue
                    total += member.size
                    # the sizes come from each header, checked before its data is read (a stream has no index)
                    check_sizes(path, [(member.name, member.size)], None)
                    check_total(path, total, max_total)
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
        raise DataError(
            f"{path} is not a readable .tar.gz archive ({type(e).__name__}: {e}). It is corrupt "
            f"or truncated: download it again."
        ) from None


def _image_member(p: PurePosixPath) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and "__MACOSX" not in p.parts


# --- mini-ImageNet -----------------------------------------------------------------------------------


def build_mini_imagenet(files: dict[str, Path]):
    images = files["images"]
    if not images.is_dir():
        raise DataError(f"mini-imagenet: {images} should be the folder of all the jpgs the split csvs name.")
    split_files = find_split_files(files, "images", "mini-imagenet", "mini-imagenet/ravi", "csv")
    entries = {s: read_ravi_csv(p) for s, p in split_files.items()}
    assign_splits(
        {s: sorted({lab for _, lab in rows}) for s, rows in entries.items()},
        {lab for rows in entries.values() for _, lab in rows},
        "mini-imagenet",
    )
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
        raise DataError(
            f"mini-imagenet: {len(absent)} image(s) named in the split csvs are missing from "
            f"{images}: {_listing(absent)}. The images folder is incomplete: copy it again."
        )
    columns: dict[str, list] = {"image": [], "label": [], "split": []}
    for split in SPLITS:
        for fn, label in entries[split]:
            columns["image"].append({"bytes": (images / fn).read_bytes(), "path": None})
            columns["label"].append(label)
            columns["split"].append(split)
    return make_dataset(columns, image_features(split="string"))


# --- CUB-200-2011 -------------------------------------------------------------------------------------

CUB_ARCHIVE = "CUB_200_2011.tgz"


def build_cub(files: dict[str, Path]):
    split_files = find_split_files(files, CUB_ARCHIVE, "cub", "cub", "json")
    classes = {s: read_split_json(p) for s, p in split_files.items()}
    found = sorted(
        (p.parts[-2], p.name, data)
        for p, data in tar_members(
            files[CUB_ARCHIVE], lambda p: len(p.parts) >= 3 and p.parts[-3] == "images" and _image_member(p)
        )
    )
    if not found:
        raise DataError(
            f"{files[CUB_ARCHIVE]} holds no CUB_200_2011/images/<class>/<file>.jpg members; it is "
            f"not the CUB-200-2011 archive."
        )
    split_of = assign_splits(classes, {c for c, _, _ in found}, "cub")
    rows: dict[str, list] = {
        "image": [{"bytes": data, "path": None} for _, _, data in found],
        "label": [c for c, _, _ in found],
        "split": [split_of[c] for c, _, _ in found],
    }
    return make_dataset(rows, image_features(split="string"))


def _splits_of(data_key: str, name: str, split_dir: str, ext: str):
    def found(files: dict[str, Path]) -> dict[str, Path]:
        return {f"split:{s}": p for s, p in find_split_files(files, data_key, name, split_dir, ext).items()}

    return found


DATASETS.register(
    "mini-imagenet",
    DatasetSpec(
        name="mini-imagenet",
        auxiliary=_splits_of("images", "mini-imagenet", "mini-imagenet/ravi", "csv"),
        description="mini-ImageNet (Vinyals et al. 2016), Ravi & Larochelle split: 100 ImageNet classes x 600 "
        "images, 64/16/20 train/val/test classes",
        files=("images",),  # ImageNet's terms allow no public download
        build=build_mini_imagenet,
        columns=("image", "label", "split"),
    ),
)
DATASETS.register(
    "cub",
    DatasetSpec(
        name="cub",
        auxiliary=_splits_of(CUB_ARCHIVE, "cub", "cub", "json"),
        description="CUB-200-2011 (Wah et al. 2011): 11,788 images of 200 bird species, 100/50/50 "
        "train/val/test classes",
        files=(CUB_ARCHIVE,),
        build=build_cub,  # the Caltech data page is the source; its download link is not guaranteed stable
        columns=("image", "label", "split"),
    ),
)
