"""The example project's settings with the benchmark's URLs (adds ``prog/api/stream/``)."""

from __future__ import annotations

from progrock_demo.settings import *  # noqa: F403

ROOT_URLCONF = "fallback_bench.urls"
ASGI_APPLICATION = "fallback_bench.asgi.application"
