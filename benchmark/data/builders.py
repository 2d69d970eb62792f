"""Builders for the datasets whose archives we read: Omniglot, PACS and Caltech-101.

Each reads the official archive layout and returns a `datasets.Dataset` with an `image` column
(the original encoded bytes, decoded later exactly once by the tensor store) and a `label` column
holding the class name, plus `alphabet`/`character`/`split` (Omniglot) or `domain` (PACS).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from .prepare import DATASETS, DataError, DatasetSpec, open_zip

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def image_features(**extra: str):
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.Value("string"),
            **{k: datasets.Value(v) for k, v in extra.items()},
        }
    )


def make_dataset(rows: dict[str, list], features):
    import datasets

    return datasets.Dataset.from_dict(rows, features=features)


def zip_images(path: Path):
    """(member path parts, bytes) for every image member of an archive, in sorted order."""
    with open_zip(path) as z:
        for info in sorted(z.infolist(), key=lambda i: i.filename):
            p = PurePosixPath(info.filename)
            if info.is_dir() or p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
                continue
            if "__MACOSX" in p.parts:
                continue
            yield p.parts, z.read(info)


def build_omniglot(files: dict[str, Path]):
    rows: dict[str, list] = {k: [] for k in ("image", "label", "alphabet", "character", "drawer", "split")}
    for archive, split in (("images_background.zip", "background"), ("images_evaluation.zip", "evaluation")):
        for parts, data in zip_images(files[archive]):
            if len(parts) != 4:
                raise DataError(
                    f"{files[archive]}: unexpected member {'/'.join(parts)}; expected "
                    f"images_{split}/<Alphabet>/characterNN/<id>_<drawer>.png"
                )
            _, alphabet, character, fname = parts
            rows["image"].append({"bytes": data, "path": None})
            rows["label"].append(f"{alphabet}/{character}")
            rows["alphabet"].append(alphabet)
            rows["character"].append(character)
            rows["drawer"].append(int(PurePosixPath(fname).stem.split("_")[-1]))
            rows["split"].append(split)
    return make_dataset(rows, image_features(alphabet="string", character="string", drawer="int32", split="string"))


PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")


def build_pacs(files: dict[str, Path]):
    rows: dict[str, list] = {"image": [], "label": [], "domain": []}
    for parts, data in zip_images(files["PACS.zip"]):
        # PACS/<domain>/<class>/<file>; tolerate archives without the top folder
        tail = parts[-3:]
        if len(parts) < 3 or tail[0] not in PACS_DOMAINS:
            raise DataError(
                f"{files['PACS.zip']}: unexpected member {'/'.join(parts)}; expected PACS/<domain>/<class>/<file>"
            )
        domain, label, _ = tail
        rows["image"].append({"bytes": data, "path": None})
        rows["label"].append(label)
        rows["domain"].append(domain)
    return make_dataset(rows, image_features(domain="string"))


CALTECH_CLUTTER = "BACKGROUND_Google"  # random clutter images, not an object class


def build_caltech101(files: dict[str, Path]):
    rows: dict[str, list] = {"image": [], "label": []}
    for parts, data in zip_images(files["101_ObjectCategories.zip"]):
        label = parts[-2]
        if label == CALTECH_CLUTTER:
            continue
        rows["image"].append({"bytes": data, "path": None})
        rows["label"].append(label)
    return make_dataset(rows, image_features())


DATASETS.register(
    "omniglot",
    DatasetSpec(
        name="omniglot",
        description="Omniglot (Lake et al. 2015): 1,623 handwritten characters from 50 alphabets, 20 drawers each",
        files=("images_background.zip", "images_evaluation.zip"),
        urls={
            f: f"https://github.com/brendenlake/omniglot/raw/master/python/{f}"
            for f in ("images_background.zip", "images_evaluation.zip")
        },
        build=build_omniglot,
        columns=("image", "label", "alphabet", "character", "split"),
    ),
)
DATASETS.register(
    "pacs",
    DatasetSpec(
        name="pacs",
        description="PACS (Li et al. 2017): 7 classes in 4 domains (photo, art_painting, cartoon, sketch)",
        files=("PACS.zip",),
        build=build_pacs,  # distributed through the authors' drive folder: no stable direct URL
        columns=("image", "label", "domain"),
    ),
)
DATASETS.register(
    "caltech101",
    DatasetSpec(
        name="caltech101",
        description="Caltech-101 (Fei-Fei et al. 2004): 101 object classes (BACKGROUND_Google clutter dropped)",
        files=("101_ObjectCategories.zip",),
        urls={
            "101_ObjectCategories.zip": "https://data.caltech.edu/records/mzrjq-6wc02/files/101_ObjectCategories.zip"
        },
        build=build_caltech101,
    ),
)
