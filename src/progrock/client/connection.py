"""Async WebSocket connection to a ProgRock server (aiohttp's client).

A thin adapter: it obtains an anonymous Django session from the server's ``/``
page, opens ``/prog/`` with ``Cookie`` and ``Origin`` headers like a browser
would (or, given a token, sends it as each socket's first message instead of
using a session: docs/howto-tokens.md), and moves JSON objects in and out.
What the messages mean is :mod:`progrock.client.state`'s business.
"""

from __future__ import annotations

import contextlib
import json
from types import TracebackType
from typing import Any

import aiohttp

from progrock.client.args import home_page, origin, socket_url

SESSION_COOKIE = "sessionid"
CLOSE_UNAUTHENTICATED = 4401  # progrock.web.tokens: the socket's token was refused
CONNECT_TIMEOUT = 15.0
HEARTBEAT = 20.0


class ConnectionProblem(Exception):
    """The server cannot be reached, refused us, or spoke something else than the protocol."""


#: Close code of a server restarting on purpose (service restart): reconnect at once.
SERVICE_RESTART = 1012


class Disconnected(Exception):
    """An open socket closed or broke without us asking: worth reconnecting.

    ``code``: the close code the server sent, if it sent one.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text


class Client:
    """One HTTP client session for a server URL; opens :class:`Connection` objects."""

    def __init__(
        self,
        url: str,
        session_key: str | None = None,
        *,
        token: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.url = url
        self.session_key = session_key
        self.token = token
        self.heartbeat = heartbeat
        self._http = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_connect=connect_timeout
            ),
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def obtain_session(self) -> str | None:
        """GET the ``/`` page and keep the ``sessionid`` cookie it sets (``None`` if none)."""
        page = home_page(self.url)
        try:
            async with self._http.get(page, allow_redirects=True) as response:
                await response.read()
                key: str | None = None
                for step in (*response.history, response):
                    morsel = step.cookies.get(SESSION_COOKIE)
                    if morsel is not None and morsel.value:
                        key = morsel.value
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionProblem(f"cannot reach {page}: {_describe(exc)}") from exc
        self.session_key = key
        return key

    def _headers(self) -> dict[str, str]:
        if self.session_key and not self.token:
            return {"Cookie": f"{SESSION_COOKIE}={self.session_key}"}
        return {}

    async def connect(self) -> Connection:
        """Open the socket at ``/prog/``; raise :class:`ConnectionProblem` if we cannot."""
        address = socket_url(self.url)
        try:
            ws = await self._http.ws_connect(
                address,
                origin=origin(self.url),
                headers=self._headers(),
                heartbeat=self.heartbeat,
                autoclose=True,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            hint = ""
            if exc.status == 403:
                hint = " (the server refuses this Origin: is the URL's host in its ALLOWED_HOSTS?)"
            raise ConnectionProblem(
                f"{address} refused the WebSocket handshake: HTTP {exc.status}{hint}"
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionProblem(f"cannot connect to {address}: {_describe(exc)}") from exc
        connection = Connection(ws)
        if self.token:
            # Before anything else: a refused token closes the socket with 4401.
            try:
                await connection.send({"action": "auth", "token": self.token})
            except Disconnected as exc:
                raise ConnectionProblem(f"{address} closed before the token: {exc}") from exc
        return connection


class Connection:
    """An open ``/prog/`` socket carrying one JSON object per text frame."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send(self, message: dict[str, Any]) -> None:
        """Send one client message; raise :class:`Disconnected` if the socket is gone."""
        if self._ws.closed:
            raise Disconnected("the socket is closed")
        try:
            await self._ws.send_str(json.dumps(message, separators=(",", ":")))
        except (aiohttp.ClientError, OSError, ConnectionError) as exc:
            raise Disconnected(_describe(exc)) from exc

    async def receive(self) -> Any:
        """The next decoded server message.

        Raises :class:`Disconnected` when the socket closes or breaks and
        :class:`ConnectionProblem` on a frame that is not JSON text.
        """
        try:
            msg = await self._ws.receive()
        except (aiohttp.ClientError, OSError, ConnectionError) as exc:
            raise Disconnected(_describe(exc)) from exc
        if msg.type is aiohttp.WSMsgType.TEXT:
            try:
                return json.loads(msg.data)
            except ValueError:
                raise ConnectionProblem(
                    f"expected a JSON text frame from the server, got {msg.data[:200]!r}"
                ) from None
        if msg.type is aiohttp.WSMsgType.BINARY:
            raise ConnectionProblem(
                f"expected a JSON text frame from the server, got binary {msg.data[:50]!r}"
            )
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise Disconnected(f"socket error: {msg.data!r}")
        code = self._ws.close_code
        if code == CLOSE_UNAUTHENTICATED:  # the same token would be refused again
            reason = msg.extra if isinstance(msg.extra, str) and msg.extra else "no reason given"
            raise ConnectionProblem(f"the server refused the token (close 4401): {reason}")
        if code == SERVICE_RESTART:
            raise Disconnected("the server is restarting: code 1012", code)
        raise Disconnected(f"the server closed the socket (code {code})", code)

    async def close(self) -> None:
        if not self._ws.closed:
            with contextlib.suppress(aiohttp.ClientError, OSError, ConnectionError):
                await self._ws.close()
