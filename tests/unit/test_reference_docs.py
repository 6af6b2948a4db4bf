"""The reference pages list what the code has: every system check, every management command."""

from __future__ import annotations

import re
from pathlib import Path

from progrock import checks

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
COMMANDS = ROOT / "src" / "progrock" / "management" / "commands"


def test_the_checks_reference_lists_every_check_id_once() -> None:
    """docs/reference/checks.md has one row per progrock.E/W id that checks.py emits."""
    emitted = set(re.findall(r'id="(progrock\.[EW]\d{3})"', Path(checks.__file__).read_text()))
    rows = re.findall(
        r"^\| `(progrock\.[EW]\d{3})` \|", (REFERENCE / "checks.md").read_text(), re.MULTILINE
    )
    assert sorted(rows) == sorted(emitted), (sorted(rows), sorted(emitted))
    assert len(rows) == len(set(rows)) and len(emitted) >= 15


def test_the_commands_reference_has_a_section_per_command() -> None:
    """docs/reference/commands.md has a section for each of ProgRock's management commands."""
    commands = {p.stem for p in COMMANDS.glob("*.py") if not p.stem.startswith("_")}
    sections = set(
        re.findall(r"^## `(\w+)`", (REFERENCE / "commands.md").read_text(), re.MULTILINE)
    )
    assert sections == commands and len(commands) >= 4, (sections, commands)
