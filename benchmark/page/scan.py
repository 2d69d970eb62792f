"""What the results index (index.py) is keyed on: the record files in a folder, found with their
signatures, and the version of the code that turns records into rows, verdicts and ranks."""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from ..settings import SETTINGS

FORMAT = 1  # the index's table layout (index.py)


@cache
def code_version() -> str:
    """Changes whenever code that decides a row, a verdict or a rank may have changed."""
    import benchmark

    pkg = Path(benchmark.__file__).parent
    files = {*pkg.glob("records/**/*"), *pkg.glob("settings/*.py"), *pkg.glob("stats/*.py")}
    files |= {pkg / "page" / name for name in ("rows.py", "index.py", "rankstore.py", "scan.py")}
    for _, setting in SETTINGS.items():  # a setting registered from outside the package too
        files |= {Path(f) for c in type(setting).__mro__ if (f := _source_of(c))}
    h = hashlib.sha256(f"format {FORMAT}; settings {sorted(SETTINGS)}".encode())
    for name in ("numpy", "scipy", "pandas", "jsonschema", "fastjsonschema"):
        h.update(f"{name} {importlib.metadata.version(name)}".encode())
    for source in sorted(p for p in files if p.is_file() and p.suffix in (".py", ".json")):
        h.update(source.name.encode() + source.read_bytes())
    return h.hexdigest()


def _source_of(cls: type) -> str | None:
    try:
        return inspect.getsourcefile(cls)
    except TypeError:  # a built-in class, e.g. object
        return None


def json_files(root: str) -> Iterator[tuple[str, str]]:
    """(relative path, path) of what `Path(root).rglob("*.json")` finds (links to folders are not followed,
    unreadable folders are passed over), with os.scandir: a third of the time on a folder of 10,000 records."""
    folders = [("", root)]
    while folders:
        rel, folder = folders.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".json"):
                yield rel + entry.name, entry.path
            try:
                inside = entry.is_dir(follow_symlinks=False)  # a folder, not a link to one
            except OSError:
                inside = False
            if inside:
                folders.append((f"{rel}{entry.name}/", entry.path))
