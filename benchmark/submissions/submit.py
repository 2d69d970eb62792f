"""`bench submit`: run a user's one-file method on protocols through the same harness as the built-ins;
its records are of kind `submission` and name the file and its sha256."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import BenchError
from ..core.files import sha256_bytes
from ..core.registry import UnknownName
from ..protocols import PROTOCOLS
from ..records import Record, format_ci
from ..run import RunConfig
from ..settings import SETTINGS, evaluate, setting_of
from .loading import DEFAULT_DRY_PROTOCOL, parse_spec
from .sandbox import Sandbox, open_submission


def resolve_protocols(names: list[str] | None) -> list[str]:
    """Protocol names and group names (a setting such as few-shot or cross-domain, or all), in order."""
    names = names or [DEFAULT_DRY_PROTOCOL]
    out: list[str] = []
    groups = {s for s in SETTINGS if any(p.setting == s for _, p in PROTOCOLS.items())}
    for n in names:
        if n == "all":
            picked = [name for name, _ in PROTOCOLS.items()]
        elif n in groups:
            picked = [name for name, p in PROTOCOLS.items() if p.setting == n]
        elif n in PROTOCOLS:
            picked = [n]
        else:
            close = difflib.get_close_matches(n, [*groups, "all", *PROTOCOLS], n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownName(
                f"unknown protocol {n!r}.{hint} Use a protocol name, a group "
                f"({', '.join(sorted(groups))}) or all (see `bench list`)."
            )
        out += [p for p in picked if p not in out]
    return out


def submit(
    spec: str,
    protocols: list[str] | None = None,
    log: Callable[[str], None] = print,
    before_run: Callable[[list[str]], None] | None = None,
    **run_kwargs: Any,
) -> list[Path]:
    """Load and check the submission, run it on every selected protocol, print a summary; written paths.
    `before_run(protocol names)` is called once the submission passed its checks (the CLI prepares data)."""
    names = resolve_protocols(protocols)
    path, class_name = parse_spec(spec)
    sha = sha256_bytes(path.read_bytes())
    # the file is imported, checked, trained and asked for predictions only inside its sandbox
    sandbox, cls = open_submission(path, class_name, sha, run_kwargs.get("device", "auto"))
    try:
        return _run(
            sandbox,
            cls,
            {"file": str(path), "class": cls.__name__, "sha256": sha},
            names,
            protocols,
            log,
            before_run,
            run_kwargs,
        )
    finally:
        sandbox.close()


def _run(
    sandbox: Sandbox,
    cls: Any,
    source: dict,
    names: list[str],
    protocols: list[str] | None,
    log: Callable[[str], None],
    before_run: Callable[[list[str]], None] | None,
    run_kwargs: dict,
) -> list[Path]:
    explicit = {n for n in (protocols or [DEFAULT_DRY_PROTOCOL]) if n in PROTOCOLS}
    shapes: dict[tuple[int, int], str] = {}
    todo = []
    for n in names:
        p = PROTOCOLS.get(n)
        why = setting_of(p).supports(p) or cls.supports(p)
        if why and n in explicit:
            raise BenchError(f"{cls.name} cannot run protocol {n}: {why}")
        if why:
            log(f"skipping {n}: {why}")
        else:
            todo.append(n)
            shapes.setdefault((p.image_size, p.channels), n)
    for name in shapes.values():  # a dry predict per image shape: shape bugs show before any training
        sandbox.call("dry", {"protocol": name, "hparams": dict(run_kwargs.get("hparams") or {})})
    if before_run:
        before_run(todo)
    log(
        f"submission {cls.name} ({source['file']}:{source['class']}, sha256 {source['sha256'][:12]}) "
        f"on {len(todo)} protocol(s)"
    )
    # protocols that train the same way (e.g. caltech101-5w1s and caltech101-to-pacs-*-5w1s) share one
    # training run per seed; each still gets its own record
    groups: dict = {}
    for n in todo:
        p = PROTOCOLS.get(n)
        groups.setdefault((type(setting_of(p)).train, setting_of(p).training_key(p)), []).append(n)
    done = []
    for group in groups.values():
        cfg = RunConfig(cls.name, tuple(group), kind="submission", source=source, **run_kwargs)
        done += evaluate(cfg, method_cls=cls, log=log)
    rows, written = [], []
    for record, path in done:
        r = Record.from_dict(record)
        rows.append(
            (
                r.protocol.name,
                format_ci(r.summary.mean, r.summary.section.get("ci95")),
                str(r.summary.section.get("n_episodes", "-")),
                str(r.summary.n_seeds),
                str(path or "-"),
            )
        )
        if path:
            written.append(path)
    if rows:
        head = ("protocol", "accuracy %", "episodes", "seeds", "record")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        log("\n" + "  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for row in rows:
            log("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if written:
            log(f"\ncheck a record with `bench verify {written[0]}`; see them with `bench leaderboard`")
    return written
