"""Deprecated: the Python API moved to :mod:`progrock.api`.

``from progrock.tasks import start_task`` still works, with a
``DeprecationWarning``; it will be removed in ProgRock 1.0.
"""

from __future__ import annotations

import warnings
from typing import Any

_MOVED = {
    "start_task": "progrock.api",
    "astart_task": "progrock.api",
    "report_progress": "progrock.api",
    "areport_progress": "progrock.api",
    "owner_for_request": "progrock.api",
    "TooManyTasks": "progrock.exceptions",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'progrock.tasks' has no attribute {name!r}")
    warnings.warn(
        f"progrock.tasks.{name} moved to {module}.{name}; progrock.tasks goes in 1.0",
        DeprecationWarning,
        stacklevel=2,
    )
    from importlib import import_module

    return getattr(import_module(module), name)
