"""Backend task-service adapters, and :func:`load_service` to build the configured one.

``PROGROCK["SERVICE"] = {"BACKEND": "dotted.path.Class", "OPTIONS": {kwargs}}``
names a class (or factory) implementing :class:`TaskService`; the default is
:class:`progrock.services.http.HttpTaskService`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from django.utils.module_loading import import_string

from progrock.conf import progrock_settings
from progrock.exceptions import ImproperlyConfigured
from progrock.services.base import ServiceStatus, TaskService, parse_status

logger = logging.getLogger("progrock.worker")

__all__ = [
    "ServiceStatus",
    "TaskService",
    "aclose_service",
    "build_service",
    "load_service",
    "parse_status",
]

_cache: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, TaskService]] = (
    weakref.WeakKeyDictionary()
)


def build_service(config: Mapping[str, Any]) -> TaskService:
    """Build a TaskService from a ``{"BACKEND": path, "OPTIONS": kwargs}`` mapping."""
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured(
            f"PROGROCK['SERVICE'] must be a dict, got {type(config).__name__}: {config!r}"
        )
    path = config.get("BACKEND")
    options = config.get("OPTIONS", {})
    if not isinstance(path, str) or not path:
        raise ImproperlyConfigured(
            f"PROGROCK['SERVICE']['BACKEND'] must be a dotted path string, got {path!r}"
        )
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ImproperlyConfigured(
            f"PROGROCK['SERVICE']['OPTIONS'] must be a dict of keyword arguments, got {options!r}"
        )
    try:
        factory = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"PROGROCK['SERVICE']['BACKEND'] {path!r} cannot be imported: {exc}"
        ) from exc
    if not callable(factory):
        raise ImproperlyConfigured(
            f"PROGROCK['SERVICE']['BACKEND'] {path!r} is not a class or factory: {factory!r}"
        )
    try:
        service = factory(**options)
    except TypeError as exc:
        raise ImproperlyConfigured(
            f"PROGROCK['SERVICE']['OPTIONS'] {dict(options)!r} do not fit {path}: {exc}"
        ) from exc
    missing = [
        name
        for name in ("create", "status_many", "cancel", "aclose")
        if not callable(getattr(service, name, None))
    ]
    if missing:
        raise ImproperlyConfigured(
            f"PROGROCK['SERVICE']['BACKEND'] {path!r} built {service!r}, which lacks the "
            f"TaskService methods {missing}"
        )
    result: TaskService = service
    return result


def load_service() -> TaskService:
    """The configured TaskService, one instance per running event loop.

    Called repeatedly by the worker: the instance (and its connection pool) is
    reused as long as ``PROGROCK["SERVICE"]`` is unchanged. Outside an event
    loop a fresh, uncached instance is returned.
    """
    config = progrock_settings.SERVICE
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return build_service(config)
    key = repr(config)
    cached = _cache.get(loop)
    if cached is not None and cached[0] == key:
        return cached[1]
    service = build_service(config)
    _cache[loop] = (key, service)
    if cached is not None:
        # The settings changed: close the old instance in the background.
        task = loop.create_task(cached[1].aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    return service


_closing: set[asyncio.Task[None]] = set()


async def aclose_service() -> None:
    """Close and forget the current event loop's cached service, if any."""
    cached = _cache.pop(asyncio.get_running_loop(), None)
    if cached is not None:
        await cached[1].aclose()


def preload() -> bool:
    """Import the configured service's module now, not on the worker's first message.

    ``runprogrock`` calls it before it consumes anything: importing the
    built-in HTTP service's client (aiohttp, which builds its TLS contexts at
    import) costs about 0.2 s of CPU, which would otherwise land on the first
    burst of starts. Returns whether the import worked. Never raises: a
    setting that is malformed or a module that fails to import is logged here
    and left for the first message to report (with the setting's name,
    through the worker's usual error path), as before.
    """
    try:
        config = progrock_settings.SERVICE
        path = config.get("BACKEND") if isinstance(config, Mapping) else None
        if not isinstance(path, str) or not path:
            return False
        import_string(path)
    except Exception as exc:  # the module's own import errors too: never fatal here
        logger.warning("could not preload PROGROCK['SERVICE']: %s", exc)
        return False
    return True
