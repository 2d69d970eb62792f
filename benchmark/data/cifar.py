"""CIFAR-FS and FC100, both read from the CIFAR-100 python archive: every image with its fine class,
its superclass and its split (CIFAR-FS by class, FC100 by superclass, from the standard split files).
The archive's pickles are read with an unpickler that admits only containers and numpy arrays."""

from __future__ import annotations

import codecs
import functools
import io
import pickle
from pathlib import Path

from .builders import image_features, make_dataset
from .extra import _listing, _splits_of, assign_splits, find_split_files, read_split_json, tar_members
from .prepare import DATASETS, DataError, DatasetSpec

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
    return {
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,  # type: ignore[attr-defined]
        ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,  # type: ignore[attr-defined]
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only.

    The archive's sha256 is recorded in the manifest (and checked against SHA256SUMS where one is
    shipped), but a pickle can run arbitrary code, so a tampered archive must not get that far either.
    """

    def find_class(self, module: str, name: str):
        try:
            return _pickle_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: CIFAR-100 pickles hold only dicts, lists and numpy arrays"
            ) from None


def _unpickle(data: bytes, where: str) -> dict:
    try:
        # encoding="bytes": the pickles come from Python 2, their str keys and array buffers stay bytes.
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # unpickling fails in many types; the user needs the cause and the fix
        raise DataError(
            f"{where} is not a CIFAR-100 pickle ({type(e).__name__}: {e}). The archive is "
            f"corrupt or not the official python version: download it again."
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} holds a {type(obj).__name__}, not the dict of the official CIFAR-100 pickles.")
    return obj


def read_cifar100(path: Path) -> dict[str, list]:
    """All 60,000 images of the python archive (train then test): pixels (HxWxC), fine and coarse names."""
    import numpy as np

    parts = {}
    for p, data in tar_members(
        path, lambda p: p.parts[-2:-1] == ("cifar-100-python",) and p.name in ("train", "test", "meta")
    ):
        parts[p.name] = _unpickle(data, f"{path}:{p}")
    missing = [m for m in ("meta", "train", "test") if m not in parts]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join('cifar-100-python/' + m for m in missing)}; it is not the "
            f"CIFAR-100 python archive ({CIFAR_URL})."
        )
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
        raise DataError(
            f"{path}: unexpected CIFAR-100 pickle contents ({type(e).__name__}: {e}); it is not "
            f"the official python archive ({CIFAR_URL})."
        ) from None
    return out


def _png(pixels) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _cifar_dataset(cifar: dict[str, list], split_of_row: list[str]):
    rows = {
        "image": [{"bytes": _png(px), "path": None} for px in cifar["pixels"]],
        "label": cifar["label"],
        "superclass": cifar["superclass"],
        "split": split_of_row,
    }
    return make_dataset(rows, image_features(superclass="string", split="string"))


def _superclass_of(cifar: dict[str, list], name: str) -> dict[str, str]:
    sup: dict[str, str] = {}
    for label, superclass in zip(cifar["label"], cifar["superclass"]):
        if sup.setdefault(label, superclass) != superclass:
            raise DataError(
                f"{name}: class {label!r} appears under superclasses {sup[label]!r} and "
                f"{superclass!r}; the archive is not the official CIFAR-100."
            )
    return sup


def build_cifar_fs(files: dict[str, Path]):
    split_files = find_split_files(files, CIFAR_ARCHIVE, "cifar-fs", "cifar-fs", "json")
    pairs = {s: read_split_json(p, pairs=True) for s, p in split_files.items()}
    cifar = read_cifar100(files[CIFAR_ARCHIVE])
    sup = _superclass_of(cifar, "cifar-fs")
    split_of = assign_splits({s: [c for _, c in ps] for s, ps in pairs.items()}, sup, "cifar-fs")
    wrong = [
        f"{c} ({s!r} in the split file, {sup[c]!r} in the data)" for ps in pairs.values() for s, c in ps if sup[c] != s
    ]
    if wrong:
        raise DataError(f"cifar-fs: the split files give the wrong superclass for {_listing(wrong)}.")
    return _cifar_dataset(cifar, [split_of[c] for c in cifar["label"]])


def build_fc100(files: dict[str, Path]):
    split_files = find_split_files(files, CIFAR_ARCHIVE, "fc100", "fc100", "json")
    supers = {s: read_split_json(p) for s, p in split_files.items()}
    cifar = read_cifar100(files[CIFAR_ARCHIVE])
    split_of = assign_splits(supers, cifar["superclass"], "fc100", what="superclass")
    return _cifar_dataset(cifar, [split_of[s] for s in cifar["superclass"]])


DATASETS.register(
    "cifar-fs",
    DatasetSpec(
        name="cifar-fs",
        auxiliary=_splits_of(CIFAR_ARCHIVE, "cifar-fs", "cifar-fs", "json"),
        description="CIFAR-FS (Bertinetto et al. 2019): all 60,000 CIFAR-100 images, 64/16/20 train/val/test classes",
        files=(CIFAR_ARCHIVE,),
        urls={CIFAR_ARCHIVE: CIFAR_URL},
        build=build_cifar_fs,
        columns=("image", "label", "superclass", "split"),
    ),
)
DATASETS.register(
    "fc100",
    DatasetSpec(
        name="fc100",
        auxiliary=_splits_of(CIFAR_ARCHIVE, "fc100", "fc100", "json"),
        description="FC100 (Oreshkin et al. 2018): all 60,000 CIFAR-100 images split by superclass, 12/4/4 "
        "superclasses = 60/20/20 classes",
        files=(CIFAR_ARCHIVE,),
        urls={CIFAR_ARCHIVE: CIFAR_URL},
        build=build_fc100,
        columns=("image", "label", "superclass", "split"),
    ),
)
