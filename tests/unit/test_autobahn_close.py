"""progrock.contrib.autobahn_close: Daphne's sockets close with a code instead of dropping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from daphne.ws_protocol import WebSocketFactory

from progrock.contrib import autobahn_close


@pytest.fixture
def restored() -> Iterator[None]:
    """Put Daphne's own factory constructor back (install() is process-wide)."""
    original = WebSocketFactory.__init__
    yield
    WebSocketFactory.__init__ = original  # type: ignore[method-assign]
    if hasattr(WebSocketFactory, autobahn_close._MARK):
        delattr(WebSocketFactory, autobahn_close._MARK)


class _Server:
    """What WebSocketFactory reads from Daphne's server object."""

    def __init__(self) -> None:
        self.application: Any = None


def test_install_turns_fail_by_drop_off(restored: None) -> None:
    """Before: factories drop failed connections; after: they close with the code."""
    assert WebSocketFactory(_Server()).failByDrop is True
    assert autobahn_close.install() is True
    assert autobahn_close.install() is True  # again: harmless, not wrapped twice
    factory = WebSocketFactory(_Server())
    assert factory.failByDrop is False
    # Daphne's own later options (set in Server.run) leave it off.
    factory.setProtocolOptions(maxMessagePayloadSize=1024)
    assert factory.failByDrop is False and factory.maxMessagePayloadSize == 1024
