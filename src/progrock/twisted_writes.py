"""Deprecated: Twisted's write-through moved to :mod:`progrock.contrib.twisted_writes`.

``from progrock import twisted_writes; twisted_writes.install()`` still works, with a
``DeprecationWarning``; this path goes in ProgRock 1.0.
"""

from __future__ import annotations

import warnings
from typing import Any

from progrock.contrib import twisted_writes as _moved

_MOVED = ("install",)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'progrock.twisted_writes' has no attribute {name!r}")
    warnings.warn(
        f"progrock.twisted_writes.{name} moved to progrock.contrib.twisted_writes.{name}; "
        "progrock.twisted_writes goes in 1.0",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_moved, name)
