"""The HTTP API's gates, answered in JSON: a method it does not serve, a failed CSRF
check, a path it does not have. Never Django's HTML pages, never an empty body.

The CSRF check is Django's own (``CsrfViewMiddleware``, with the project's
``CSRF_*`` settings and trusted origins), run by the view itself: the views are
marked ``csrf_exempt`` so the project's middleware leaves them to it, and only
their refusal differs (``403 {"type": "error", "code": "csrf_failed", ...}``);
the project's ``CSRF_FAILURE_VIEW`` stays as it is for every other view.

A request that carries a token (``Authorization: Token <key>`` or ``Bearer
<token>``, with ``PROGROCK["AUTHENTICATORS"]`` set) is authenticated by it
first (:mod:`progrock.web.tokens`): a bad token answers ``401 unauthenticated``,
a good one skips the CSRF check, since the request's owner is then the token's
user and nothing a browser attaches by itself (cookies) counts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, cast

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from progrock.exceptions import InvalidToken
from progrock.web import tokens
from progrock.web.failures import REQUEST_TIMEOUT, error_for

logger = logging.getLogger("progrock.web")

View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]

#: Error codes only the HTTP API answers (the socket's are in progrock.protocol).
HTTP_ERROR_CODES: Final = frozenset({"csrf_failed", "method_not_allowed", "not_found"})

CSRF_FIX: Final = (
    "send the csrftoken cookie's value in an X-CSRFToken header "
    "(https://docs.djangoproject.com/en/stable/howto/csrf/#using-csrf-protection-with-ajax)"
)


def http_error(status: int, code: str, detail: str, **fields: Any) -> JsonResponse:
    """An HTTP-only error: the ``error`` shape of the protocol, with an HTTP code."""
    if code not in HTTP_ERROR_CODES:
        raise ValueError(f"code must be one of {sorted(HTTP_ERROR_CODES)}, got {code!r}")
    return JsonResponse({"type": "error", "code": code, "detail": detail, **fields}, status=status)


def csrf_refusal(reason: str) -> JsonResponse:
    return http_error(403, "csrf_failed", f"CSRF check failed: {reason} Fix: {CSRF_FIX}.")


class _JsonCsrf(CsrfViewMiddleware):
    """Django's CSRF check whose refusal is the API's JSON error."""

    def _reject(self, request: HttpRequest, reason: str) -> HttpResponse:
        logger.warning("Forbidden (CSRF: %s): %s", reason, request.path)
        return csrf_refusal(reason)


def _no_response(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    raise RuntimeError("the CSRF check runs as a view check, not as middleware")


_csrf = _JsonCsrf(_no_response)


def api_view(*methods: str) -> Callable[[View], View]:
    """Serve ``methods`` only (others: 405 JSON with ``Allow``), token-authenticated
    (401 JSON) or else CSRF-checked (403 JSON)."""
    allowed = ", ".join(methods)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                refused = http_error(
                    405,
                    "method_not_allowed",
                    f"{request.path} answers {allowed}, got {request.method}",
                )
                refused["Allow"] = allowed
                return refused
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):  # the token is read from the database
                    by_token = await tokens.authenticate_request(request)
            except InvalidToken as exc:
                return tokens.unauthorized(exc)
            except Exception as exc:
                message = error_for(exc, f"{request.method} {request.path}")
                return JsonResponse(
                    message, status=503 if message["code"] == "unavailable" else 500
                )
            if not by_token:
                refusal = await sync_to_async(_check_csrf)(request, view, args, kwargs)
                if refusal is not None:
                    return refusal
            return await view(request, *args, **kwargs)

        return csrf_exempt(wrapper)

    return decorate


def _check_csrf(
    request: HttpRequest, view: View, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> HttpResponseBase | None:
    # In a thread: with CSRF_USE_SESSIONS the token is read from the session (the database).
    _csrf.process_request(request)
    refusal = _csrf.process_view(request, cast(Any, view), args, kwargs)
    if refusal is not None and not isinstance(refusal, JsonResponse):  # pragma: no cover
        return csrf_refusal("the request was refused.")  # a Django that rejects another way
    return refusal


@csrf_exempt
async def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under the API's prefix: 404 JSON, not the project's HTML page."""
    return http_error(404, "not_found", f"no API endpoint at {request.path}")
