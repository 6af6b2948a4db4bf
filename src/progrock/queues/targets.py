"""What a ``PROGROCK["KINDS"]`` entry names: the backend service, or a task queue's task.

``KINDS`` is a list of kinds (each runs on the backend service), or a mapping
``kind -> target`` where a target is ``None`` (the backend service) or
``"SCHEME:dotted.path"``: ``celery:`` a Celery task, ``tasks:`` a Django
(``django.tasks``) task. Parsing is pure: nothing is imported here
(:mod:`progrock.queues.bridges` does that, where the task is used).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

#: Scheme -> what it names, for messages.
SCHEMES: Final[Mapping[str, str]] = {"celery": "a Celery task", "tasks": "a django.tasks task"}
_DOTTED: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True, slots=True)
class Target:
    """A kind that runs on a task queue: ``scheme`` (``celery``, ``tasks``) and the
    dotted path of its task."""

    scheme: str
    path: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.path}"


def parse_target(kind: str, value: object) -> Target | None:
    """The target of ``kind``; None for the backend service. Raises ``ValueError``
    naming the kind and quoting the value when it is neither."""
    if value is None:
        return None
    expected = "None (the backend service) or 'SCHEME:dotted.path' with SCHEME one of " + ", ".join(
        SCHEMES
    )
    if not isinstance(value, str):
        raise ValueError(f"the target of kind {kind!r} must be {expected}, got {value!r}")
    scheme, sep, path = value.partition(":")
    if not sep or scheme not in SCHEMES or not _DOTTED.match(path):
        raise ValueError(f"the target of kind {kind!r} must be {expected}, got {value!r}")
    return Target(scheme, path)


def parse_kinds(value: Mapping[object, object]) -> dict[str, Target]:
    """The queue targets of a ``KINDS`` mapping (kinds of the backend service left out)."""
    found: dict[str, Target] = {}
    for kind, target in value.items():
        parsed = parse_target(str(kind), target)
        if parsed is not None:
            found[str(kind)] = parsed
    return found
