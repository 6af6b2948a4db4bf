"""Durations as people write them: "30d", "12h", "90m", "1d12h" (no I/O, no Django)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
DURATION_SHAPE: Final = "a duration like 30d, 12h, 90m or 1d12h (units s, m, h, d, w)"


def parse_duration(text: str) -> float:
    """Seconds in ``text`` ("30d", "12h", "90m", "45s", "2w", "1d12h"); raise ValueError."""
    cleaned = text.strip().lower()
    parts = _PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"must be {DURATION_SHAPE}, got {text!r}")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"must be longer than 0, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit that divides it (2592000 -> "30d")."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def retention_seconds(value: object) -> float | None:
    """``PROGROCK["RETENTION"]``: None (keep every row), a duration string, a
    ``timedelta`` or a number of seconds, as seconds; raise ValueError naming the shapes."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ValueError(
            f"must be None, {DURATION_SHAPE}, a timedelta or a positive number of seconds, "
            f"got {value!r}"
        )
    return seconds
