"""ProgRock: real-time progress for long-running tasks in Django.

The Python API is importable from here (``from progrock import report_progress``);
each name is loaded on first use, so ``import progrock`` imports no Django
models (settings need not be configured yet).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API: dict[str, str] = {
    "start_task": "progrock.api",
    "astart_task": "progrock.api",
    "report_progress": "progrock.api",
    "areport_progress": "progrock.api",
    "keep_alive": "progrock.api",
    "akeep_alive": "progrock.api",
    "is_cancelled": "progrock.api",
    "ais_cancelled": "progrock.api",
    "owner_for_request": "progrock.api",
    "Cancelled": "progrock.exceptions",
    "TooManyTasks": "progrock.exceptions",
    "TaskNotFound": "progrock.exceptions",
}

__all__ = [
    "Cancelled",
    "TaskNotFound",
    "TooManyTasks",
    "__version__",
    "ais_cancelled",
    "akeep_alive",
    "areport_progress",
    "astart_task",
    "is_cancelled",
    "keep_alive",
    "owner_for_request",
    "report_progress",
    "start_task",
]

if TYPE_CHECKING:
    from progrock.api import (
        ais_cancelled,
        akeep_alive,
        areport_progress,
        astart_task,
        is_cancelled,
        keep_alive,
        owner_for_request,
        report_progress,
        start_task,
    )
    from progrock.exceptions import Cancelled, TaskNotFound, TooManyTasks


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'progrock' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
