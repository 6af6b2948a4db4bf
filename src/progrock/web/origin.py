"""Accept WebSocket handshakes only from the page's own origin: scheme, host and port.

Channels' ``AllowedHostsOriginValidator`` compares only the ``Origin``'s host
with ``ALLOWED_HOSTS``: a page on ``http://example.com:8080`` (another service
on the same host, or plain HTTP beside HTTPS) could open sockets that carry
the visitor's session cookie. :class:`SameOriginValidator` accepts a handshake
when its ``Origin`` is

* the socket's own origin: the same scheme (``https`` for a ``wss`` socket, or
  when ``SECURE_PROXY_SSL_HEADER`` says the proxy received HTTPS), the same host
  (which must be in ``ALLOWED_HOSTS``) and the same port (default ports
  spelled out or not); or
* one of ``CSRF_TRUSTED_ORIGINS`` (Django's list of other trusted origins,
  ``https://*.example.com`` wildcards included), compared the same way.

A handshake without an ``Origin`` header is refused, as Channels' validator does.
Wrap the WebSocket application with it in ``asgi.py``::

    "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(...)))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

Origin = tuple[str, str, int]  # scheme, host (lower case), port

_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(text: str) -> Origin | None:
    """``scheme://host[:port]`` as a tuple; None for ``null`` or anything malformed."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _headers(scope: Mapping[str, Any]) -> dict[bytes, bytes]:
    return {bytes(k).lower(): bytes(v) for k, v in scope.get("headers", ())}


def _allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:  # as Django's HttpRequest.get_host() does
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def _is_secure(scope: Mapping[str, Any], headers: Mapping[bytes, bytes]) -> bool:
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        header, value = proxy
        # Django names it as a META key: HTTP_X_FORWARDED_PROTO -> x-forwarded-proto.
        name = header.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        seen = headers.get(name)
        if seen is not None:
            return bool(seen.decode("latin-1").split(",")[0].strip() == value)
    return bool(scope.get("scheme") in ("wss", "https"))


def own_origin(scope: Mapping[str, Any]) -> Origin | None:
    """The origin of a page on the socket's own host: None if its host is not allowed."""
    headers = _headers(scope)
    host_header = headers.get(b"host", b"").decode("latin-1").lower()
    domain, port_text = split_domain_port(host_header)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    scheme = "https" if _is_secure(scope, headers) else "http"
    try:
        port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, domain.strip("[]"), port


def _trusted(origin: Origin, trusted: Iterable[str]) -> bool:
    for entry in trusted:
        wildcard = "://*." in entry
        parsed = parse_origin(entry.replace("://*.", "://", 1) if wildcard else entry)
        if parsed is None:
            continue
        scheme, host, port = parsed
        if origin[0] != scheme or origin[2] != port:
            continue
        if origin[1] == host or (wildcard and origin[1].endswith("." + host)):
            return True
    return False


def origin_allowed(scope: Mapping[str, Any]) -> bool:
    """Whether the handshake's ``Origin`` is the socket's own or a trusted one."""
    raw = _headers(scope).get(b"origin")
    if raw is None:
        return False
    origin = parse_origin(raw.decode("latin-1"))
    if origin is None:
        return False
    if origin == own_origin(scope):
        return True
    return _trusted(origin, getattr(settings, "CSRF_TRUSTED_ORIGINS", ()))


class SameOriginValidator:
    """ASGI middleware: WebSocket handshakes from another origin are refused (403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") == "websocket" and not origin_allowed(scope):
            return await _refuse(receive, send)
        return await self.application(scope, receive, send)


async def _refuse(receive: Any, send: Any) -> None:
    """Close before accepting: the server answers the handshake with 403."""
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.close"})
