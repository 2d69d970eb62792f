"""`bench list`: what is registered, answered in about a second.

The overview reads the built-in methods' names and citations from the source of `baselines/` (each
file's `@register` classes) instead of importing them, because importing a method imports torch and
Lightning (seconds). `bench list --method NAME` imports the methods: it prints their recipes.
A test checks that the source reading and the registry agree.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from ..core import paths
from ..data import DATASETS, read_manifest_if_prepared
from ..data.folder import user_datasets
from ..protocols import PROTOCOLS
from ..settings import SETTINGS


def shape(p) -> str:
    c = p.continual
    if c is not None and c.kind == "stream":
        return f"{c.streams} streams"
    if c is not None and c.kind == "tasks":
        return f"{len(p.stages) - 1} tasks, {c.incremental}-incr."
    if c is not None:
        return f"{len(p.stages)} stages, {p.episode.ways}-way {p.episode.shots}-shot"
    return f"{p.episode.ways}-way {p.episode.shots}-shot" if p.episode else "classification"


def scored(p) -> str:
    """What a protocol scores, in a few words."""
    c = p.continual
    if c is not None and c.kind == "stream":
        counts = "/".join(map(str, c.checkpoints))
        return f"held-out images of the classes seen, after {counts} classes"
    if c is not None and c.kind == "tasks":
        return "every task's held-out images after each task (R, ACC/BWT/FWT)"
    if c is not None:
        return f"{p.test_episodes} test episodes per group after each stage (R, ACC/BWT/FWT)"
    return f"{p.test_episodes} test episodes" if p.episode else f"every image of {p.test.label}"


def table(rows: Sequence[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _literal_attrs(node: ast.ClassDef) -> dict[str, object]:
    out: dict[str, object] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                out[stmt.targets[0].id] = ast.literal_eval(stmt.value)
    return out


def builtin_methods() -> list[tuple[str, str]] | None:
    """(name, paper) of every `@register` class in baselines/, in file order; None when a class does not
    state both as plain strings (the caller then imports the methods)."""
    spec = importlib.util.find_spec("baselines")
    if spec is None or not spec.submodule_search_locations:
        return None
    out: list[tuple[str, str]] = []
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
            for node in classes.values():
                if not any(isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list):
                    continue
                attrs = _literal_attrs(node)
                name, paper = attrs.get("name"), attrs.get("paper")
                if not (isinstance(name, str) and isinstance(paper, str)):
                    return None
                out.append((name, paper))
    return out


def registered_methods() -> list[tuple[str, str]]:
    import baselines  # noqa: F401  (registers the built-in methods)

    from ..methods import ALGORITHMS

    return [(name, cls.paper) for name, cls in ALGORITHMS.items()]


def cmd_list(args, ap) -> int:
    if args.method:
        from .commands import describe_method  # imports the methods (torch): only for the detailed view

        return describe_method(args.method, args.results)
    methods = builtin_methods()
    print("methods:")
    print("\n".join(table(sorted(methods) if methods is not None else registered_methods())))
    print("\nsettings:")
    print("\n".join(table([(name, s.description) for name, s in SETTINGS.items()])))
    print("\nprotocols:")
    print(
        "\n".join(
            table(
                [
                    (name, f"v{p.version}", p.setting, shape(p), f"{p.image_size}px", scored(p))
                    for name, p in PROTOCOLS.items()
                ]
            )
        )
    )
    print(f"\ndatasets (prepared in {paths.data_dir(args.data_dir)}):")
    rows: list[tuple[str, ...]] = []
    for name, spec in DATASETS.items():
        m = read_manifest_if_prepared(name, args.data_dir)
        state = f"prepared: {m['rows']} images, {m['classes']} classes" if m else "not prepared"
        state += "" if m else f" (bench data prepare {name})"
        rows += [(name, state), ("", spec.description)]
    for name, m in user_datasets(args.data_dir):
        domains = f", {len(m['domains'])} domains" if m.get("domains") else ""
        rows += [(name, f"yours: {m['rows']} images, {m['classes']} classes{domains}"), ("", f"from {m['source']}")]
    print("\n".join(table(rows)))
    return 0
