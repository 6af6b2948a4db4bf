"""Fixtures that run the real ProgRock processes.

* ``stack``: one started :class:`~progrock.local.stack.Stack` for the whole session
  (private Redis, its own backend, 2 workers, a temporary data dir). Share it
  only from tests that leave it as they found it.
* ``make_stack``: a factory for a fresh stack per test, for tests that kill or
  restart processes; every stack it made is stopped when the test ends.

Each stack gets a database of its own: SQLite in its data dir, or on a
PostgreSQL run (``PROGROCK_TEST_DATABASE=postgres``) a new database on the
session's private server (see ``new_database`` in tests/conftest.py).

Set ``PROGROCK_E2E_ECHO=1`` to see every child's prefixed output live (``-s``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from progrock.local.stack import Stack
from tests.conftest import NewDatabase

ECHO = os.environ.get("PROGROCK_E2E_ECHO") == "1"
START_TIMEOUT = 90.0

MakeStack = Callable[..., Stack]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, new_database: NewDatabase) -> Iterator[Stack]:
    """A running stack shared by the session's e2e tests."""
    shared = Stack(
        data_dir=tmp_path_factory.mktemp("stack"),
        workers=2,
        echo=ECHO,
        database_url=new_database(),
    )
    try:
        shared.start(timeout=START_TIMEOUT)
        yield shared
    finally:
        shared.stop()


@pytest.fixture
def make_stack(tmp_path: Path, new_database: NewDatabase) -> Iterator[MakeStack]:
    """Factory: ``make_stack(**Stack options)`` returns a started stack of this test's own."""
    made: list[Stack] = []

    def make(**options: Any) -> Stack:
        data_dir = options.pop("data_dir", None) or tmp_path / f"stack-{len(made)}"
        defaults = {"workers": 2, "echo": ECHO}
        if "database_url" not in options:
            defaults["database_url"] = new_database()
        stack = Stack(data_dir=data_dir, **{**defaults, **options})
        made.append(stack)
        stack.start(timeout=START_TIMEOUT)
        return stack

    try:
        yield make
    finally:
        for stack in reversed(made):
            stack.stop()
