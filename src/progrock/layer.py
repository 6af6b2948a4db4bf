"""Deprecated: the one-round-trip channel layer moved to :mod:`progrock.contrib.layer`.

``"progrock.layer.RedisChannelLayer"`` as the ``BACKEND`` of ``CHANNEL_LAYERS``
(Channels imports it by that path) and ``from progrock.layer import
RedisChannelLayer`` still work, with a ``DeprecationWarning``; this path goes
in ProgRock 1.0.
"""

from __future__ import annotations

import warnings
from typing import Any

from progrock.contrib import layer as _moved

_MOVED = ("RedisChannelLayer",)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'progrock.layer' has no attribute {name!r}")
    warnings.warn(
        f"progrock.layer.{name} moved to progrock.contrib.layer.{name}; progrock.layer goes in 1.0",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_moved, name)
