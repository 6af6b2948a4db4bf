"""The WebSocket Origin check compares scheme, host and port with the socket's own."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from progrock.web.origin import SameOriginValidator, origin_allowed, parse_origin


def scope(
    origin: str | None, host: str = "example.com", scheme: str = "ws", **extra: str
) -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    return {"type": "websocket", "scheme": scheme, "headers": headers}


ALLOWED = override_settings(ALLOWED_HOSTS=["example.com", "127.0.0.1", "[::1]"], DEBUG=False)


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://example.com", "example.com", "ws"),
        ("http://example.com:80", "example.com", "ws"),
        ("https://example.com", "example.com", "wss"),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws"),
        ("http://[::1]:8000", "[::1]:8000", "ws"),
        ("HTTP://EXAMPLE.COM", "example.com", "ws"),
    ],
)
def test_the_page_s_own_origin_is_accepted(origin: str, host: str, scheme: str) -> None:
    """Same scheme, host and port (default ports written or not): accepted."""
    with ALLOWED:
        assert origin_allowed(scope(origin, host, scheme))


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://example.com:8080", "example.com", "ws"),  # another port
        ("https://example.com", "example.com", "ws"),  # another scheme
        ("http://example.com", "example.com", "wss"),  # plain page, TLS socket
        ("http://evil.example", "example.com", "ws"),  # another host
        ("http://evil.example", "evil.example", "ws"),  # a host not in ALLOWED_HOSTS
        ("null", "example.com", "ws"),
        ("http://example.com:99999", "example.com", "ws"),  # malformed port
        ("ftp://example.com", "example.com", "ws"),
        (None, "example.com", "ws"),  # no Origin header at all
    ],
)
def test_other_origins_are_refused(origin: str | None, host: str, scheme: str) -> None:
    """Any difference in scheme, host or port, or no Origin: refused."""
    with ALLOWED:
        assert not origin_allowed(scope(origin, host, scheme))


def test_csrf_trusted_origins_are_accepted_exactly() -> None:
    """CSRF_TRUSTED_ORIGINS entries (wildcards too) are accepted, on their scheme and port."""
    trusted = ["https://app.example.com", "https://*.cdn.example"]
    with ALLOWED, override_settings(CSRF_TRUSTED_ORIGINS=trusted):
        assert origin_allowed(scope("https://app.example.com", "example.com"))
        assert origin_allowed(scope("https://a.cdn.example", "example.com"))
        assert not origin_allowed(scope("http://app.example.com", "example.com"))
        assert not origin_allowed(scope("https://app.example.com:444", "example.com"))
        assert not origin_allowed(scope("https://cdn.example.evil", "example.com"))


def test_a_proxy_s_https_header_counts() -> None:
    """Behind a TLS proxy (SECURE_PROXY_SSL_HEADER), the page's https origin matches."""
    with ALLOWED, override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        forwarded = scope("https://example.com", **{"x-forwarded-proto": "https"})
        assert origin_allowed(forwarded)
        assert not origin_allowed(scope("https://example.com"))


def test_parse_origin_normalises() -> None:
    """Scheme and host in lower case, the default port filled in."""
    assert parse_origin("HTTPS://Example.COM") == ("https", "example.com", 443)
    assert parse_origin("http://[::1]:8000") == ("http", "::1", 8000)
    assert parse_origin("null") is None


async def test_the_validator_denies_and_passes_through() -> None:
    """A refused handshake is closed before accept; an allowed one reaches the app."""
    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    async def receive() -> dict[str, Any]:
        return (
            {"type": "websocket.connect"}
            if not sent
            else {"type": "websocket.disconnect", "code": 1000}
        )

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    validator = SameOriginValidator(app)
    with ALLOWED:
        await validator(scope("http://evil.example"), receive, send)
        assert reached == [] and sent[0]["type"] == "websocket.close"
        await validator(scope("http://example.com"), receive, send)
    assert reached == ["websocket"]
