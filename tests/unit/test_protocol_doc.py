"""docs/protocol.md and progrock.protocol describe the same protocol."""

from __future__ import annotations

import re
from pathlib import Path

from progrock import protocol as p

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()


def section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n## ", start + 1)
    nxt = DOC.find("\n### ", start + 1)
    ends = [e for e in (end, nxt) if e != -1]
    return DOC[start : min(ends) if ends else len(DOC)]


def first_column(text: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.M))


def test_every_error_code_is_documented() -> None:
    """The error-code table lists exactly the codes the implementation can send."""
    assert first_column(section("### 3.3 Error codes")) == set(p.ERROR_CODES)


def test_every_failure_code_is_documented() -> None:
    """The failure-code table lists exactly the implementation's failure codes."""
    assert first_column(section("### 3.4 Failure codes")) == set(p.FAILURE_CODES)


def test_every_action_is_documented() -> None:
    """The client-action table lists exactly the actions the parser accepts."""
    assert first_column(section("## 2. Client")) == set(p.ACTIONS)


def test_every_task_message_type_is_documented() -> None:
    """The task-message table lists every task message type."""
    assert first_column(section("### 3.1 Task messages")) >= set(p.TASK_MESSAGE_TYPES)


def test_snapshot_fields_are_documented() -> None:
    """Every field a snapshot carries is named in the snapshot row."""
    row = next(line for line in DOC.splitlines() if line.startswith("| `snapshot` |"))
    for name in p.SNAPSHOT_FIELDS:
        assert f"`{name}`" in row, name
