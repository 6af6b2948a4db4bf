"""The demo's static files: Django's ASGI handler, with bad paths answered 404.

Django's ``ASGIStaticFilesHandler`` turns only ``Http404`` into a response: a
path that climbs out of the static folders (``/static/../../etc/passwd``)
raises ``SuspiciousFileOperation`` and became a 500 with a traceback in the
log. Here every path that names no static file is a 404.
"""

from __future__ import annotations

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase


class StaticFilesHandler(ASGIStaticFilesHandler):  # type: ignore[misc]
    """Serves ``STATIC_URL`` from the finders (demo only: production uses collectstatic)."""

    def serve(self, request: HttpRequest) -> HttpResponseBase:
        try:
            return super().serve(request)  # type: ignore[no-any-return]
        except (SuspiciousOperation, ValueError, OSError) as exc:
            raise Http404("no such static file") from exc
