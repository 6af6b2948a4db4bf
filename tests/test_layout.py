"""The package's shape: who may import whom (architecture tests, no I/O beyond reading src/).

Every import counts: top-level, function-local and ``if TYPE_CHECKING:`` ones,
so a circle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "progrock"
#: Opt-in parts and the local stack: they may import the app, never the other way.
#: progrock.layer, .twisted_writes and .autobahn_logs are the contrib parts' old
#: import paths (deprecation shims): opt-in like contrib itself.
OPTIONAL = (
    "progrock.local",
    "progrock.contrib",
    "progrock.layer",
    "progrock.twisted_writes",
    "progrock.autobahn_logs",
)


@dataclass(frozen=True)
class Import:
    """One import statement's target module, where it is and whether it runs at import time."""

    source: str  # the importing module
    target: str  # the imported module (a module or package of the tree, or an outside name)
    line: int
    top_level: bool  # False: inside a function (a lazy import)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module under src/, by dotted name."""
    return {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def _functions_lines(tree: ast.AST) -> set[int]:
    """Line numbers of import statements inside a function body."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    lines.add(inner.lineno)
    return lines


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[Import]:
    """The modules ``name`` imports; ``from a import b`` names ``a.b`` where that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy = _functions_lines(tree)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, node.lineno, node.lineno not in lazy)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                # A package's own name is its __init__; a module's package is its parent.
                keep = len(base) - node.level + (1 if is_package else 0)
                prefix = ".".join(base[:keep])
                base_name = f"{prefix}.{node.module}" if node.module else prefix
            else:
                base_name = node.module or ""
            for alias in node.names:
                candidate = f"{base_name}.{alias.name}"
                target = candidate if candidate in known else base_name
                yield Import(name, target, node.lineno, node.lineno not in lazy)


def all_imports() -> list[Import]:
    found = modules()
    known = set(found)
    return [imp for name, path in found.items() for imp in imports_of(name, path, known)]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (first and last entries the same), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_circle() -> None:
    """The checker itself: a circle through three modules is reported, a tree is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_there_is_no_import_cycle_in_the_package() -> None:
    """No module of progrock imports itself back through others, lazily or for typing either."""
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        if within(imp.source, PACKAGE) and within(imp.target, PACKAGE) and imp.source != imp.target:
            graph.setdefault(imp.source, set()).add(imp.target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_app_does_not_import_the_local_stack_or_contrib() -> None:
    """App modules never import progrock.local or progrock.contrib (only the CLI, lazily, the
    local stack); contrib and local may import the app."""
    wrong = []
    for imp in all_imports():
        if not within(imp.source, PACKAGE) or any(within(imp.source, o) for o in OPTIONAL):
            continue
        for optional in OPTIONAL:
            if not within(imp.target, optional):
                continue
            lazy_cli = imp.source == "progrock.cli" and optional == "progrock.local"
            if not (lazy_cli and not imp.top_level):
                wrong.append(f"{imp.source}:{imp.line} imports {imp.target}")
    assert wrong == []


def test_nothing_under_src_imports_the_demo() -> None:
    """The demo (example/progrock_demo) is outside the distribution: src/ never imports it."""
    wrong = [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in all_imports()
        if within(imp.target, "progrock_demo")
    ]
    assert wrong == []
