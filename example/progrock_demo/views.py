"""Pages of the example project: the demo at ``/`` and the 2017 demo's page at ``/classic/``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def _ensure_session(request: HttpRequest) -> None:
    """Give an anonymous visitor a session: it owns their tasks (protocol, 5).

    The socket authenticates with the session cookie, so the cookie must exist
    before the page's JavaScript connects.
    """
    if not request.session.session_key:
        request.session.save()


def index(request: HttpRequest) -> HttpResponse:
    """The demo: several tasks at once, with progress bars, ETA and cancel."""
    _ensure_session(request)
    return render(request, "progrock_demo/index.html")


def classic_page(request: HttpRequest) -> HttpResponse:
    """The 2017 ProgRock demo's page and JavaScript, unchanged: the compatibility proof."""
    _ensure_session(request)
    return render(request, "progrock_demo/classic.html")
