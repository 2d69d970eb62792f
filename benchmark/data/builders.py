"""Builders for the datasets whose archives we read: Omniglot, PACS and Caltech-101.

Each reads the official archive layout and returns a `datasets.Dataset` with an `image` column
(the original encoded bytes, decoded later exactly once by the tensor store) and a `label` column
holding the class name, plus `alphabet`/`character`/`split` (Omniglot) or `domain` (PACS).
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

from PIL import Image

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


def check_image(data: bytes, where: str) -> None:
    """An image file PIL can read, checked at prepare time: a bad one fails here, named, not in a run."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as e:  # PIL raises many types for a file that is not an image
        raise DataError(f"{where} is not an image PIL can read ({type(e).__name__}: {e})") from None


def zip_images(path: Path, max_total: int | None = None):
    """(member path parts, bytes) for every image member of an archive, in sorted order, each checked."""
    with open_zip(path, max_total) as z:
        for info in sorted(z.infolist(), key=lambda i: i.filename):
            p = PurePosixPath(info.filename)
            if info.is_dir() or p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
                continue
            if "__MACOSX" in p.parts:
                continue
            data = z.read(info)
            check_image(data, f"{path}:{info.filename}")
            yield p.parts, data


# The official archives' alphabets (Lake et al. 2015): the Lake split and the Vinyals split's
# provenance depend on which archive an alphabet came from, so archives swapped by name are refused.
OMNIGLOT_ALPHABETS = {
    "background": frozenset(
        [
            "Alphabet_of_the_Magi",
            "Anglo-Saxon_Futhorc",
            "Arcadian",
            "Armenian",
            "Asomtavruli_(Georgian)",
            "Balinese",
            "Bengali",
            "Blackfoot_(Canadian_Aboriginal_Syllabics)",
            "Braille",
            "Burmese_(Myanmar)",
            "Cyrillic",
            "Early_Aramaic",
            "Futurama",
            "Grantha",
            "Greek",
            "Gujarati",
            "Hebrew",
            "Inuktitut_(Canadian_Aboriginal_Syllabics)",
            "Japanese_(hiragana)",
            "Japanese_(katakana)",
            "Korean",
            "Latin",
            "Malay_(Jawi_-_Arabic)",
            "Mkhedruli_(Georgian)",
            "N_Ko",
            "Ojibwe_(Canadian_Aboriginal_Syllabics)",
            "Sanskrit",
            "Syriac_(Estrangelo)",
            "Tagalog",
            "Tifinagh",
        ]
    ),
    "evaluation": frozenset(
        [
            "Angelic",
            "Atemayar_Qelisayer",
            "Atlantean",
            "Aurek-Besh",
            "Avesta",
            "Ge_ez",
            "Glagolitic",
            "Gurmukhi",
            "Kannada",
            "Keble",
            "Malayalam",
            "Manipuri",
            "Mongolian",
            "Old_Church_Slavonic_(Cyrillic)",
            "Oriya",
            "Sylheti",
            "Syriac_(Serto)",
            "Tengwar",
            "Tibetan",
            "ULOG",
        ]
    ),
}
OMNIGLOT_MAX_BYTES = 256 << 20  # the two official archives unpack to 8 MB
PACS_MAX_BYTES = 4 << 30  # about 0.2 GB as distributed
CALTECH_MAX_BYTES = 2 << 30  # about 0.13 GB as distributed


def check_omniglot_alphabets(archive: Path, split: str, alphabets: set[str]) -> None:
    other = "evaluation" if split == "background" else "background"
    foreign = sorted(alphabets & OMNIGLOT_ALPHABETS[other])
    if foreign:
        raise DataError(
            f"{archive} holds {len(foreign)} {other} alphabet(s) (e.g. {foreign[0]}), but it is the {split} "
            f"archive: images_background.zip and images_evaluation.zip are swapped or mislabelled. Use the "
            f"official archives under their own names."
        )


def build_omniglot(files: dict[str, Path]):
    rows: dict[str, list] = {k: [] for k in ("image", "label", "alphabet", "character", "drawer", "split")}
    for archive, split in (("images_background.zip", "background"), ("images_evaluation.zip", "evaluation")):
        seen: set[str] = set()
        for parts, data in zip_images(files[archive], OMNIGLOT_MAX_BYTES):
            if len(parts) != 4:
                raise DataError(
                    f"{files[archive]}: unexpected member {'/'.join(parts)}; expected "
                    f"images_{split}/<Alphabet>/characterNN/<id>_<drawer>.png"
                )
            _, alphabet, character, fname = parts
            seen.add(alphabet)
            rows["image"].append({"bytes": data, "path": None})
            rows["label"].append(f"{alphabet}/{character}")
            rows["alphabet"].append(alphabet)
            rows["character"].append(character)
            rows["drawer"].append(int(PurePosixPath(fname).stem.split("_")[-1]))
            rows["split"].append(split)
        check_omniglot_alphabets(files[archive], split, seen)
    return make_dataset(rows, image_features(alphabet="string", character="string", drawer="int32", split="string"))


PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")


def build_pacs(files: dict[str, Path]):
    rows: dict[str, list] = {"image": [], "label": [], "domain": []}
    for parts, data in zip_images(files["PACS.zip"], PACS_MAX_BYTES):
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
    for parts, data in zip_images(files["101_ObjectCategories.zip"], CALTECH_MAX_BYTES):
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
        max_bytes=OMNIGLOT_MAX_BYTES,
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
        max_bytes=PACS_MAX_BYTES,
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
        max_bytes=CALTECH_MAX_BYTES,
    ),
)
