"""Every ``progrock.x.y`` the documentation names in code spans exists: a module, or an
attribute of one (a moved module leaves no dead instruction behind)."""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
# A dotted name at the start of a code span: `progrock.api.start_task(...)`.
NAME = re.compile(r"`(progrock(?:\.[A-Za-z_]\w*)+)")
# Code spans that are not Python names: check ids, files, the token subprotocol,
# channel-layer message types.
NOT_PYTHON = re.compile(r"progrock\.([EW]\d*|js|lock|token|start|cancel|poll|sweep|error)$")


def resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_every_dotted_progrock_name_in_the_docs_exists() -> None:
    """Each `progrock.…` name in a code span of docs/, the README or CONTRIBUTING imports."""
    named = {
        (match, page.relative_to(ROOT).as_posix())
        for page in PAGES
        for match in NAME.findall(page.read_text())
        if not NOT_PYTHON.match(match)
    }
    assert len(named) > 50, "the pattern found almost nothing: is it still right?"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deprecated shims still count
        missing = sorted((name, page) for name, page in named if not resolves(name))
    assert not missing, missing
