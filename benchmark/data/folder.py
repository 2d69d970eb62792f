"""`bench data prepare --from-folder PATH NAME`: a folder of your own images becomes a prepared dataset.

Two layouts, detected from the tree unless given: `PATH/<class>/<image>` ("class") and
`PATH/<domain>/<class>/<image>` ("domain/class", which adds a `domain` column). Hidden files and
folders are skipped; every other file must be an image PIL can open. The result is the same Arrow
dataset and manifest as `prepare()` writes, built the same atomic, idempotent way; the manifest also
says it came from a folder (`"user": true`) and lists the sorted class names and domains, which is
what a protocol file's seeded ratio split is drawn from.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable
from pathlib import Path

from ..core import paths
from ..core.errors import DataError
from .builders import image_features, make_dataset
from .prepare import DATASETS, PreparedData, install, read_manifest

LAYOUTS = ("class", "domain/class")
MIN_IMAGES = 2  # per class (per domain and class): one to show, one to ask
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
RESERVED = {"protocols", "downloads", "cache"}  # other things the data folder holds
JUNK = {"__MACOSX", "Thumbs.db", "desktop.ini"}  # never images, never classes
MAX_LISTED = 12


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in JUNK)


def _listing(items: list[str]) -> str:
    more = f"\n  ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return "\n  " + "\n  ".join(items[:MAX_LISTED]) + more


def detect_layout(root: Path) -> str:
    """ "class" when the folders under PATH hold files, "domain/class" when they hold folders."""
    tops = [p for p in _visible(root) if p.is_dir()]
    if not tops:
        what = "only files" if _visible(root) else "nothing (hidden files aside)"
        raise DataError(
            f"{root} holds no class folders ({what}); put each class's images in "
            f"{root}/<class>/ (or {root}/<domain>/<class>/)."
        )
    kinds = set()
    for top in tops:
        inside = _visible(top)
        if inside:
            kinds |= {"dir" if p.is_dir() else "file" for p in inside}
    if kinds == {"dir"}:
        return "domain/class"
    if kinds <= {"file"}:
        return "class"
    raise DataError(
        f"cannot tell the layout of {root}: some folders under it hold images, others folders. "
        f"Give --layout class (PATH/<class>/<image>) or --layout domain/class "
        f"(PATH/<domain>/<class>/<image>)."
    )


def scan(root: Path, layout: str) -> dict[tuple[str, str], list[Path]]:
    """{(domain, class): [image files, sorted]}; domain is "" in the class layout."""
    problems: list[str] = []
    groups: dict[tuple[str, str], list[Path]] = {}
    stray = [p for p in _visible(root) if not p.is_dir()]
    if stray:
        problems.append(
            f"files directly in {root} (they belong in a class folder): " + ", ".join(p.name for p in stray[:5])
        )
    for top in (p for p in _visible(root) if p.is_dir()):
        if layout == "class":
            class_dirs = [("", top)]
        else:
            loose = [p for p in _visible(top) if not p.is_dir()]
            if loose:
                problems.append(
                    f"files directly in domain folder {top} (they belong in {top}/<class>/): "
                    + ", ".join(p.name for p in loose[:5])
                )
            class_dirs = [(top.name, c) for c in _visible(top) if c.is_dir()]
            if not class_dirs:
                problems.append(f"domain folder {top} holds no class folders")
        for domain, cdir in class_dirs:
            files: list[Path] = []
            sub: list[Path] = []
            for p in _visible(cdir):
                (sub if p.is_dir() else files).append(p)
            if sub:
                problems.append(
                    f"{cdir} holds folders ({', '.join(p.name for p in sub[:3])}); the {layout} "
                    f"layout has images one level down" + (" (try --layout domain/class)" if layout == "class" else "")
                )
            groups[(domain, cdir.name)] = files
    few = [f"{d + '/' if d else ''}{c}: {len(fs)}" for (d, c), fs in groups.items() if len(fs) < MIN_IMAGES]
    if few:
        problems.append(
            f"{len(few)} class folder(s) with fewer than {MIN_IMAGES} images (add images or remove "
            f"the folder):" + _listing(few)
        )
    if len({c for _, c in groups}) < 2 and not problems:
        problems.append(f"{root} has {len(groups)} class(es); episodes need at least 2")
    if problems:
        raise DataError(f"cannot prepare {root} ({layout} layout):\n- " + "\n- ".join(problems))
    return groups


def tree_sha256(root: Path, groups: dict[tuple[str, str], list[Path]]) -> str:
    """sha256 of the sorted (relative path, file sha256) list of the images prepare reads."""
    h = hashlib.sha256()
    for p in sorted(f for fs in groups.values() for f in fs):
        h.update(f"{p.relative_to(root).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _build(root: Path, layout: str, groups: dict[tuple[str, str], list[Path]]):
    from PIL import Image

    rows: dict[str, list] = {"image": [], "label": [], **({"domain": []} if layout == "domain/class" else {})}
    bad = []
    for (domain, label), files in sorted(groups.items()):
        for p in files:
            data = p.read_bytes()
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.verify()
            except Exception as e:  # PIL raises many types for a file that is not an image
                bad.append(f"{p} ({type(e).__name__})")
                continue
            rows["image"].append({"bytes": data, "path": None})
            rows["label"].append(label)
            if "domain" in rows:
                rows["domain"].append(domain)
    if bad:
        raise DataError(
            f"{len(bad)} file(s) in {root} are not images PIL can open; remove them (or move them "
            f"into a hidden folder):" + _listing(bad)
        )
    return make_dataset(rows, image_features(**({"domain": "string"} if "domain" in rows else {})))


def check_name(name: str, root: Path) -> None:
    if not NAME.match(name):
        raise DataError(
            f"dataset name {name!r} is not a lower-case slug; use letters a-z, digits and '-' "
            f"(e.g. {re.sub(r'[^a-z0-9-]+', '-', name.lower()).strip('-') or 'my-images'!r})."
        )
    if name in DATASETS:
        raise DataError(f"{name!r} is the name of a built-in dataset; give your folder another name.")
    if name in RESERVED:
        raise DataError(f"{name!r} is reserved (the data folder keeps its {name} there); choose another name.")
    existing = root / name
    if existing.exists():
        m = read_manifest(existing)
        if m is None or not m.get("user"):
            raise DataError(
                f"{existing} exists and is not a dataset prepared from a folder; it is left alone. Choose another name."
            )


def prepare_folder(
    path: str | os.PathLike,
    name: str,
    data_dir: str | os.PathLike | None = None,
    layout: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> PreparedData:
    src = Path(path).expanduser()
    root = paths.data_dir(data_dir)
    check_name(name, root)
    if not src.is_dir():
        raise DataError(f"{src} is not a folder; give the folder holding one sub-folder per class.")
    if layout is not None and layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    layout = layout or detect_layout(src)
    groups = scan(src, layout)
    log(f"checking {sum(len(f) for f in groups.values())} images in {src} ({layout} layout) ...")
    root.mkdir(parents=True, exist_ok=True)
    extra = {
        "user": True,
        "source": str(src.resolve()),
        "layout": layout,
        "class_names": sorted({c for _, c in groups}),
        "domains": sorted({d for d, _ in groups if d}),
    }
    columns = ("image", "label", "domain") if layout == "domain/class" else ("image", "label")
    return install(
        name,
        root,
        {"tree": tree_sha256(src, groups)},
        lambda: _build(src, layout, groups),
        columns,
        force=force,
        log=log,
        extra=extra,
    )


def user_datasets(data_dir: str | os.PathLike | None = None) -> list[tuple[str, dict]]:
    """(name, manifest) of every dataset prepared from a folder in the data folder, by name."""
    root = paths.data_dir(data_dir)
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir()):
        m = read_manifest(p) if p.is_dir() and NAME.match(p.name) else None
        if m and m.get("user"):
            found.append((p.name, m))
    return found
