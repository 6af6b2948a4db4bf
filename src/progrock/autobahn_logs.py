"""Deprecated: the Autobahn log fix moved to :mod:`progrock.contrib.autobahn_logs`.

``from progrock import autobahn_logs; autobahn_logs.install()`` still works, with a
``DeprecationWarning``; this path goes in ProgRock 1.0.
"""

from __future__ import annotations

import warnings
from typing import Any

from progrock.contrib import autobahn_logs as _moved

_MOVED = ("install",)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'progrock.autobahn_logs' has no attribute {name!r}")
    warnings.warn(
        f"progrock.autobahn_logs.{name} moved to progrock.contrib.autobahn_logs.{name}; "
        "progrock.autobahn_logs goes in 1.0",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_moved, name)
