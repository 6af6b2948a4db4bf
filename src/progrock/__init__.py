"""ProgRock: real-time progress for long-running tasks in Django."""

from __future__ import annotations

__version__ = "0.1.0"
