"""Pages of the example project: the demo at ``/`` and the seed's page at ``/seed/``."""

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


def seed_page(request: HttpRequest) -> HttpResponse:
    """The seed write-up's page and JavaScript, unchanged: the compatibility proof."""
    _ensure_session(request)
    return render(request, "progrock_demo/seed.html")
