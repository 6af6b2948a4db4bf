"""The ASGI application ``progrock up`` serves: the project's own, plus static files.

``runserver`` serves ``STATIC_URL`` from the finders when ``DEBUG`` is on and
``django.contrib.staticfiles`` is installed; ``progrock up`` is the same kind of
local development server, so its web processes do the same. The project's
application is named by ``PROGROCK_UP_APPLICATION`` (``module:attribute``),
which :class:`progrock.local.stack.Stack` sets: the project's ``asgi.py`` stays
as it is for production. A project whose application already serves static
files loses nothing: this handler answers ``STATIC_URL`` first, from the same
finders, and hands every other request, and every socket, to the project.
Django's log lines are printed once (:func:`print_once`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from typing import Any

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.http import FileResponse, Http404, HttpRequest, HttpResponse

#: The environment variable naming the project's ASGI application.
APPLICATION_ENV = "PROGROCK_UP_APPLICATION"


class StaticFilesHandler(ASGIStaticFilesHandler):
    """``runserver``'s static files, with every path that names no file a 404.

    Django's handler turns only ``Http404`` into a response: a path climbing out
    of the static folders raises ``SuspiciousFileOperation``, a 500.
    """

    def serve(self, request: HttpRequest) -> HttpResponse | FileResponse:
        try:
            return super().serve(request)
        except (SuspiciousOperation, ValueError, OSError) as exc:
            raise Http404("no such static file") from exc


def serves_static() -> bool:
    """Whether ``runserver`` would serve static files under the current settings."""
    from django.apps import apps
    from django.conf import settings

    return bool(settings.DEBUG) and apps.is_installed("django.contrib.staticfiles")


def print_once() -> None:
    """Let each ``django`` log record be printed once, when the project left ``LOGGING`` alone.

    Daphne gives the root logger a (timestamped) handler; Django's default
    ``LOGGING`` gives the ``django`` logger a console one too, and its records
    propagate to the root: every line (``Not Found: /x``) came out twice. The
    console handler goes; the root's, with its timestamps, stays. Under a server
    that leaves the root without a handler (Uvicorn) nothing changes.
    """
    from django.conf import settings

    if settings.LOGGING or settings.LOGGING_CONFIG != "logging.config.dictConfig":
        return  # the project's own logging: as it wrote it
    django_logger = logging.getLogger("django")
    if not logging.getLogger().handlers or not django_logger.propagate:
        return
    for handler in list(django_logger.handlers):
        if type(handler) is logging.StreamHandler:  # Django's default "console"
            django_logger.removeHandler(handler)


def load(target: str) -> Any:
    """The application ``module:attribute`` names, wrapped as :func:`serves_static` says."""
    module_name, _, attribute = target.partition(":")
    project = getattr(importlib.import_module(module_name), attribute or "application")
    print_once()
    return StaticFilesHandler(project) if serves_static() else project


@functools.cache
def _application() -> Any:
    target = os.environ.get(APPLICATION_ENV)
    if not target:
        raise ImportError(f"{__name__} serves the application ${APPLICATION_ENV} names: not set")
    return load(target)


def __getattr__(name: str) -> Any:
    # ``application`` is loaded when the server asks for it, not at import.
    if name == "application":
        return _application()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
