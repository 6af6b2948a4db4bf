"""The example project's ASGI application, under the benchmark's settings."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fallback_bench.settings")

from progrock_demo.asgi import application

__all__ = ["application"]
