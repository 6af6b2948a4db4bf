"""The demo's ASGI application, under this project's settings (DJANGO_SETTINGS_MODULE)."""

from __future__ import annotations

from progrock_demo.asgi import application

__all__ = ["application"]
