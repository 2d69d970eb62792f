"""The package's layers read as the data flow and import only downward; no module imports in a cycle.

source -> prepared data -> tensor store -> episodes -> method -> run -> record -> stats -> page, with the
record *format* (records/) below run, since run writes it and everything above reads it; settings
compose run, records and stats; the CLI, the server and submissions sit on top. Function-local
imports count the same as module-level ones: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmark"

LAYERS = [
    "core",
    "data",
    "protocols",
    "store",
    "episodes",
    "methods",
    "records",
    "stats",
    "run",
    "settings",
    "nas",
    "compat",
    "sweep",
    "page",
    "submissions",
    "cli",
]
# modules outside the layer folders, and the layer each belongs to
LOOSE = {
    "benchmark": "core",
    "benchmark.algorithms": "methods",
    "benchmark.backbones": "methods",
    "benchmark.__main__": "cli",
}
# which layers may import the sibling top-level packages
MAY_IMPORT_BASELINES = {"submissions", "cli"}
MAY_IMPORT_LEADERBOARDS = {"cli"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    if module in LOOSE:
        return LOOSE[module]
    return module.split(".")[1]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, wherever it stands."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # `from . import x`: each name is a module of the package
                    out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
                    continue
            else:
                target = node.module or ""
            out.append((node.lineno, target))
    return out


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def internal(target: str) -> str | None:
    """The benchmark module a target names (dropping trailing names that are not modules)."""
    if not target.startswith("benchmark"):
        return None
    parts = target.split(".")
    while parts:
        cand = ".".join(parts)
        if (
            cand in LOOSE
            or (ROOT / Path(*parts)).with_suffix(".py").is_file()
            or (ROOT / Path(*parts) / "__init__.py").is_file()
        ):
            return cand
        parts.pop()
    return None


def test_every_module_belongs_to_a_layer():
    stray = [
        module_name(p)
        for p in package_files()
        if module_name(p) not in LOOSE and module_name(p).split(".")[1] not in LAYERS
    ]
    assert not stray, f"modules outside every layer: {stray}; put each in one of {LAYERS}"


def test_layers_import_only_downward():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for path in package_files():
        mod = module_name(path)
        here = layer_of(mod)
        for line, target in imports_of(path):
            top = target.split(".")[0]
            if top == "baselines" and here not in MAY_IMPORT_BASELINES:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports baselines")
            if top == "leaderboards" and here not in MAY_IMPORT_LEADERBOARDS:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports leaderboards")
            dep = internal(target)
            if dep is None or dep == "benchmark":
                continue
            there = layer_of(dep)
            if rank[there] > rank[here]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target} ({there})")
    assert not upward, "imports that go up the layers:\n  " + "\n  ".join(upward)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for path in package_files():
        mod = module_name(path)
        deps = {internal(t) for _, t in imports_of(path)}
        graph[mod] = {d for d in deps if d and d != mod and d != "benchmark"}
    # a package's __init__ re-exporting its own modules is not a cycle of code
    for mod, deps in graph.items():
        graph[mod] = {d for d in deps if not (mod.startswith(d + ".") and d in graph)}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d) :] + [d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_baselines_use_only_the_method_layer_and_below():
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    for path in sorted((ROOT / "baselines").glob("*.py")):
        for line, target in imports_of(path):
            dep = internal(target)
            if dep and dep != "benchmark" and rank[layer_of(dep)] > rank["methods"]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "a method file reaches above the method layer:\n  " + "\n  ".join(bad)


def test_no_source_file_is_too_long():
    files = [*package_files(), *(ROOT / "baselines").glob("*.py"), *(ROOT / "leaderboards").glob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them): {long}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The import parser resolves relative imports, so an upward one cannot hide behind dots."""
    fake = PACKAGE / "store" / "_probe_layers.py"
    fake.write_text("def f():\n    from ..settings import evaluate\n    from .. import cli\n")
    try:
        targets = [t for _, t in imports_of(fake)]
        assert targets == ["benchmark.settings", "benchmark.cli"]
        assert layer_of(internal(targets[0])) == "settings" and layer_of(internal(targets[1])) == "cli"
    finally:
        fake.unlink()
