"""docs/reliability.md names tests that exist (no I/O beyond reading the tree)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "reliability.md").read_text()


def named_tests() -> set[tuple[str, str]]:
    """Every ``tests/....py::test_name`` the document names."""
    return set(re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)", DOC))


def test_every_test_the_guarantees_name_exists() -> None:
    """Each file::test in docs/reliability.md is a test function of that file."""
    named = named_tests()
    assert len(named) >= 40, f"expected the guarantees' tests, found {len(named)}"
    missing = []
    for path, name in sorted(named):
        source = ROOT / path
        if not source.is_file():
            missing.append(f"{path} (no such file)")
            continue
        tree = ast.parse(source.read_text())
        functions = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        if name not in functions:
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_fault_test_file_is_named() -> None:
    """Each test file marked ``fault`` appears in docs/reliability.md."""
    marked = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
        if re.search(r"pytest\.mark\.fault\b", path.read_text()) and path != Path(__file__)
    ]
    assert marked, "no test file is marked fault"
    assert [p for p in marked if p not in DOC] == []
