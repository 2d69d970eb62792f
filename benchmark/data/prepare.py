"""`bench data prepare`: an official archive becomes a Hugging Face `datasets` dataset on disk.

Prepared datasets live in `<data dir>/<name>/` next to a manifest, `metabench.json`, that records the
sha256 of every source file and of every Arrow file written. The manifest is written last and the
folder is renamed into place only when complete, so an interrupted prepare leaves a hidden
`.<name>.tmp-*` folder that nothing trusts (and the next prepare removes), never a half dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import paths
from ..core.errors import DataError
from ..core.files import sha256_file, sha256_tree
from ..core.registry import Registry

PREPARE_VERSION = 1
MANIFEST = "metabench.json"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    files: tuple[str, ...]  # what the source must hold (archives, folders, split files)
    build: Callable[[dict[str, Path]], Any]  # resolved files -> datasets.Dataset
    urls: dict[str, str] = field(default_factory=dict)  # canonical downloads, by file name
    columns: tuple[str, ...] = ("image", "label")
    # other files the build reads that resolve_source does not hand it (split files found beside the
    # data); their checksums join the sources', so a changed split file makes prepare rebuild
    auxiliary: Callable[[dict[str, Path]], dict[str, Path]] | None = None
    max_bytes: int = 8 << 30  # what its archives may unpack to, at most: generous, but not unbounded


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _expected_sums(folder: Path) -> dict[str, str]:
    """Checksums shipped beside the archives (a SHA256SUMS file, as ../shared/data has)."""
    for candidate in (folder / "SHA256SUMS", folder.parent / "SHA256SUMS"):
        if candidate.is_file():
            sums = {}
            for line in candidate.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2:
                    sums[parts[1].lstrip("*")] = parts[0]
            return {"__dir__": str(candidate.parent), **sums}
    return {}


def _verify_against_sums(path: Path, digest: str) -> None:
    sums = _expected_sums(path.parent)
    if not sums:
        return
    base = Path(sums.pop("__dir__"))
    try:
        rel = path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return
    if rel in sums and sums[rel] != digest:
        raise DataError(
            f"{path} is corrupt: its sha256 is {digest[:16]}..., but SHA256SUMS says "
            f"{sums[rel][:16]}.... Download it again (or restore it from the original)."
        )


def _download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"could not download {url} ({e}). Without internet, point at a local copy "
            f"with --source PATH or the {paths.SOURCE_ENV} environment variable."
        ) from None
    os.replace(tmp, dest)
    return dest


def resolve_source(spec: DatasetSpec, source: str | os.PathLike | None, data_dir: Path) -> dict[str, Path]:
    """Find every file the dataset needs: --source, then $BENCH_SOURCE_<NAME>, $BENCH_SOURCE, then download."""
    env_specific = os.environ.get(paths.source_env_var(spec.name))
    env_root = os.environ.get(paths.SOURCE_ENV)
    origin = source or env_specific or env_root
    if origin and str(origin).startswith(("http://", "https://")):
        base = str(origin).rstrip("/")
        return {f: _download(f"{base}/{f}", data_dir / "downloads" / spec.name / f) for f in spec.files}
    if origin:
        root = Path(origin).expanduser()
        if not root.exists():
            raise DataError(
                f"the source folder {root} does not exist (given by {'--source' if source else 'the environment'})."
            )
        found, missing = {}, []
        for f in spec.files:
            for cand in (root / f, root / spec.name / f, root / spec.name.replace("-", "") / f):
                if cand.exists():
                    found[f] = cand
                    break
            else:
                missing.append(f)
        if missing:
            raise DataError(
                f"{spec.name}: {', '.join(missing)} not found in {root} or {root / spec.name}. "
                f"It needs: {', '.join(spec.files)}."
            )
        return found
    if not spec.urls:
        raise DataError(
            f"{spec.name} has no public download; give the folder holding "
            f"{', '.join(spec.files)} with --source PATH or {paths.source_env_var(spec.name)}."
        )
    return {f: _download(spec.urls[f], data_dir / "downloads" / spec.name / f) for f in spec.files}


# No image of any dataset here comes near this; a member that claims more is not one of their images.
MAX_MEMBER_BYTES = 64 << 20


def check_sizes(path: Path, sizes: list[tuple[str, int]], max_total: int | None) -> None:
    """Refuse an archive whose members would unpack beyond what an image, or the dataset, can be, before
    anything is decompressed (a small archive can unpack to gigabytes)."""
    big = [(n, s) for n, s in sizes if s > MAX_MEMBER_BYTES]
    if big:
        raise DataError(
            f"{path}: member {big[0][0]} unpacks to {big[0][1] / 2**20:.0f} MiB, more than any image "
            f"({MAX_MEMBER_BYTES >> 20} MiB); this is not the dataset's official archive"
        )
    check_total(path, sum(s for _, s in sizes), max_total)


def check_total(path: Path, total: int, max_total: int | None) -> None:
    if max_total is not None and total > max_total:
        raise DataError(
            f"{path} unpacks to more than {total / 2**30:.1f} GiB, more than this dataset can be "
            f"({max_total / 2**30:.1f} GiB); this is not the dataset's official archive"
        )


def open_zip(path: Path, max_total: int | None = None) -> zipfile.ZipFile:
    """Open an archive, check what it would unpack to (check_sizes) and every member's CRC, so a truncated
    download or an archive bomb fails here, clearly."""
    try:
        z = zipfile.ZipFile(path)
        check_sizes(path, [(i.filename, i.file_size) for i in z.infolist()], max_total)
        bad = z.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
        raise DataError(
            f"{path} is not a readable zip archive ({e}). It is corrupt or truncated: download it again."
        ) from None
    if bad is not None:
        raise DataError(f"{path} is corrupt: member {bad} fails its CRC check. Download it again.")
    return z


@dataclass(frozen=True)
class PreparedData:
    name: str
    path: Path
    manifest: dict
    loaded: object = field(default=None, compare=False, repr=False)  # a dataset already in memory (hub, foreign)

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def dataset(self):
        if self.loaded is not None:
            return self.loaded
        import datasets  # heavy; only needed when images must be decoded

        return datasets.load_from_disk(str(self.path / "data"))


def _manifest_path(folder: Path) -> Path:
    return folder / MANIFEST


def read_manifest(folder: Path) -> dict | None:
    p = _manifest_path(folder)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def prepare(
    name: str,
    source: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> PreparedData:
    spec = DATASETS.get(name)
    root = paths.data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    files = resolve_source(spec, source, root)
    log(f"checking {len(files)} source file(s) for {name} ...")
    source_sums = {}
    for fname, p in files.items():
        digest = sha256_tree(p)
        if p.is_file():
            _verify_against_sums(p, digest)
            if p.suffix == ".zip":
                open_zip(p, spec.max_bytes).close()
        source_sums[fname] = digest
    if spec.auxiliary:
        for key, p in spec.auxiliary(files).items():
            source_sums[key] = sha256_tree(p)
    return install(name, root, source_sums, lambda: spec.build(files), spec.columns, force=force, log=log)


def install(
    name: str,
    root: Path,
    source_sums: dict,
    build: Callable[[], Any],
    columns: tuple[str, ...] = ("image", "label"),
    force: bool = False,
    log: Callable[[str], None] = print,
    extra: dict | None = None,
) -> PreparedData:
    """Build `<root>/<name>` atomically unless it was already prepared from the same sources (and the
    same `extra` manifest entries, which are written into the manifest too)."""
    final = root / name
    extra = extra or {}
    existing = read_manifest(final)
    if (
        existing
        and not force
        and existing.get("source_sha256") == source_sums
        and existing.get("prepare_version") == PREPARE_VERSION
        and all(existing.get(k) == v for k, v in extra.items())
    ):
        log(f"{name} is already prepared at {final} (fingerprint {existing['fingerprint'][:12]}); nothing to do.")
        return PreparedData(name, final, existing)

    for stale in root.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        t0 = time.time()
        ds = build()
        missing_cols = [c for c in columns if c not in ds.column_names]
        if missing_cols:
            raise DataError(f"builder for {name} produced no column(s) {missing_cols}")
        if len(ds) == 0:
            raise DataError(f"{name}: the source holds no images")
        ds.save_to_disk(str(tmp / "data"))
        arrow_sums = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        fingerprint = hashlib.sha256(json.dumps(arrow_sums, sort_keys=True).encode()).hexdigest()
        labels = ds.unique("label")
        manifest = {
            "name": name,
            "prepare_version": PREPARE_VERSION,
            "fingerprint": fingerprint,
            "rows": len(ds),
            "classes": len(labels),
            "columns": ds.column_names,
            "source_sha256": source_sums,
            "files_sha256": arrow_sums,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
        _manifest_path(tmp).write_text(json.dumps(manifest, indent=1) + "\n")
        if final.exists():
            # Move the old copy aside first so a crash between the two renames loses nothing.
            old = root / f".{name}.tmp-old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        log(f"prepared {name}: {len(ds)} images, {len(labels)} classes -> {final} ({time.time() - t0:.1f}s)")
        return PreparedData(name, final, manifest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_prepared(name_or_path: str, data_dir: str | os.PathLike | None = None) -> PreparedData:
    """A prepared dataset by registered name, a local `save_to_disk` folder, or a Hugging Face hub id."""
    root = paths.data_dir(data_dir)
    candidate = Path(name_or_path).expanduser()
    if name_or_path in DATASETS:
        folder = root / name_or_path
        manifest = read_manifest(folder)
        if manifest is None:
            raise DataError(
                f"dataset {name_or_path!r} is not prepared in {root}. Run: "
                f"bench data prepare {name_or_path} --source PATH "
                f"(or set {paths.SOURCE_ENV} to the folder holding the archives)."
            )
        return PreparedData(name_or_path, folder, manifest)
    user = read_manifest(root / name_or_path) if "/" not in name_or_path and not name_or_path.startswith(".") else None
    if user and user.get("user"):  # prepared with `bench data prepare --from-folder` (data/folder.py)
        return PreparedData(name_or_path, root / name_or_path, user)
    if candidate.exists():
        manifest = read_manifest(candidate)
        if manifest is not None:
            return PreparedData(manifest["name"], candidate, manifest)
        return _adopt_foreign(candidate.name, candidate, local=True)
    if "/" in name_or_path:
        return _adopt_foreign(name_or_path, name_or_path, local=False)
    raise DataError(DATASETS.unknown_message(name_or_path))


def _adopt_foreign(name: str, where, local: bool) -> PreparedData:
    """A dataset someone else prepared (saved folder or hub id); its own fingerprint stands in for ours."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(where)) if local else datasets.load_dataset(where, split="train")
    except Exception as e:  # datasets raises many types; the user needs the cause and the fix
        raise DataError(
            f"could not load {where!r} as a dataset ({type(e).__name__}: {e}). Give a prepared "
            f"dataset name, a `save_to_disk` folder or a hub id with image and label columns."
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        ds = datasets.concatenate_datasets(list(ds.values()))
    for col in ("image", "label"):
        if col not in ds.column_names:
            raise DataError(f"{where!r} has no {col!r} column (it has {ds.column_names}).")
    manifest = {
        "name": name,
        "fingerprint": ds._fingerprint,
        "rows": len(ds),
        "columns": ds.column_names,
        "foreign": str(where),
    }
    return PreparedData(name, Path(str(where)), manifest, loaded=ds)


def read_manifest_if_prepared(name: str, data_dir: str | os.PathLike | None = None) -> dict | None:
    return read_manifest(paths.data_dir(data_dir) / name)


def ensure_prepared(names, data_dir: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> None:
    """Prepare missing datasets when a source is configured, else say which command to run; for each
    dataset say in one line which prepared copy a run will use."""
    for name in names:
        try:
            found = load_prepared(name, data_dir)
        except DataError:
            if os.environ.get(paths.SOURCE_ENV) or os.environ.get(paths.source_env_var(name)):
                log(f"{name} is not prepared yet; preparing it from the configured source ...")
                found = prepare(name, data_dir=data_dir, log=log)
            else:
                raise
        m = found.manifest
        when = f", prepared {m['created']}" if m.get("created") else ""
        log(f"data: {name} from {found.path} ({m.get('rows', '?')} images{when}, fingerprint {found.fingerprint[:12]})")
