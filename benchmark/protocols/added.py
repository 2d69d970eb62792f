"""Protocol files in the registry: load one by path, `bench protocol add FILE` (a checked copy in
`<data dir>/protocols/<name>.toml|yaml`), and resolving what a command is given (a name resolves to a
built-in protocol first, then to an added file; a path is loaded)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..core import paths
from ..core.files import atomic_write_bytes
from .files import SUFFIXES, ProtocolFileError, parse, read
from .protocol import PROTOCOLS, SLUG, Protocol

_LOADED: dict[str, Protocol] = {}  # file protocols registered in this process, by name


def load(path: str | os.PathLike, data_dir=None) -> Protocol:
    """Read a protocol file and register it (again: the same protocol is a no-op; a new version replaces)."""
    p = read(path, data_dir)
    old = _LOADED.get(p.name)
    if old is not None and (p.name not in PROTOCOLS or PROTOCOLS.get(p.name) is not old):
        _LOADED.pop(p.name)  # unregistered meanwhile (tests do): load it afresh
        old = None
    if old is not None:
        if old == p:
            return old
        if old.version == p.version:
            raise ProtocolFileError(
                f"{path}: protocol {p.name} v{p.version} is already loaded from "
                f"{old.source[0] if old.source else 'elsewhere'} with other contents; "
                f"a changed protocol gets a new version"
            )
        PROTOCOLS.unregister(p.name)
    PROTOCOLS.register(p.name, p)
    _LOADED[p.name] = p
    return p


def unload(name: str) -> None:
    """Forget a file protocol registered by `load` (tests use it)."""
    if _LOADED.pop(name, None) is not None:
        PROTOCOLS.unregister(name)


def added_dir(data_dir=None) -> Path:
    return paths.data_dir(data_dir) / "protocols"


def find_added(name: str, data_dir=None) -> Path | None:
    found = [p for p in (added_dir(data_dir) / f"{name}{s}" for s in (".toml", ".yaml")) if p.is_file()]
    return found[0] if found and SLUG.match(name) else None


def add(path: str | os.PathLike, data_dir=None, log: Callable[[str], None] = print) -> Path:
    """`bench protocol add FILE`: check it, then copy it to `<data dir>/protocols/<name>.toml|yaml`."""
    path = Path(path).expanduser()
    p = read(path, data_dir)
    dest = added_dir(data_dir) / f"{p.name}{SUFFIXES[path.suffix.lower()]}"
    existing = find_added(p.name, data_dir)
    if existing is not None:
        old_raw = parse(existing)
        old_version = old_raw.get("version")
        if old_raw == parse(path):
            log(f"protocol {p.name} v{p.version} is already added ({existing}); nothing to do.")
            return existing
        if old_version == p.version:
            raise ProtocolFileError(
                f"{path}: protocol {p.name} v{p.version} is already added from a different "
                f"file ({existing}); a changed protocol gets a new version: set version = "
                f"{p.version + 1} (results of v{p.version} keep their meaning)"
            )
        if isinstance(old_version, int) and old_version > p.version:
            raise ProtocolFileError(
                f"{path}: protocol {p.name} v{old_version} is already added ({existing}); "
                f"v{p.version} is older. A changed protocol gets a newer version."
            )
    atomic_write_bytes(dest, path.read_bytes())
    if existing is not None and existing != dest:
        existing.unlink()
    log(
        f"added protocol {p.name} v{p.version} ({p.setting}, {p.episode_spec}) -> {dest}; use it as --protocol {p.name}"
    )
    return dest


def resolve(names_or_paths, data_dir=None) -> list[str]:
    """Protocol names for a run: built-in names as they are, protocol files (paths) and added names loaded
    and registered. Anything else is passed through, for the registry's 'did you mean' error."""
    out = []
    for item in names_or_paths:
        item = str(item)
        if item in PROTOCOLS and item not in _LOADED:
            out.append(item)
        elif Path(item).suffix.lower() in SUFFIXES or "/" in item or os.sep in item:
            out.append(load(item, data_dir).name)
        elif (found := find_added(item, data_dir)) is not None:
            out.append(load(found, data_dir).name)
        else:
            out.append(item)
    return out


def resolve_for_record(record_path: str | os.PathLike, data_dir=None) -> None:
    """Register the file protocol a record was made on (by its name if added, else from the file the
    record names), so `bench verify` finds it; a record on a built-in protocol needs nothing."""
    import json

    try:
        proto = json.loads(Path(record_path).read_text())["protocol"]
        name, src = proto["name"], proto.get("source") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return  # verify reports an unreadable record itself
    if name in PROTOCOLS and name not in _LOADED:
        return
    if find_added(name, data_dir) is not None:
        resolve([name], data_dir)
    elif src.get("file") and Path(src["file"]).is_file():
        load(src["file"], data_dir)
