"""progrock.contrib.autobahn_close: Daphne's sockets close with a code instead of dropping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import daphne
import pytest
from daphne.ws_protocol import WebSocketFactory

from progrock.contrib import autobahn_close


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Put Daphne's own factory constructor back (install() is process-wide)."""
    monkeypatch.setattr(autobahn_close.GUARD, "warned", False)
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


def test_an_untested_daphne_is_left_alone_with_one_warning(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the tested range: install() is False, warns once, the constructor stays Daphne's."""
    monkeypatch.setattr(daphne, "__version__", "4.3.0")
    before = WebSocketFactory.__init__
    with pytest.warns(RuntimeWarning) as caught:
        assert autobahn_close.install() is False
        assert autobahn_close.install() is False
    assert len(caught) == 1
    assert "Daphne '4.3.0'" in str(caught[0].message)
    assert ">=4.2.3, <4.3" in str(caught[0].message)
    assert WebSocketFactory.__init__ is before
    assert WebSocketFactory(_Server()).failByDrop is True


def test_a_factory_without_the_option_is_left_alone(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A factory whose setProtocolOptions no longer takes failByDrop: nothing is changed."""
    original = WebSocketFactory.setProtocolOptions

    def options(self: Any, **kwargs: Any) -> None:  # an Autobahn that renamed the option
        original(self, **kwargs)

    monkeypatch.setattr(WebSocketFactory, "setProtocolOptions", options)
    before = WebSocketFactory.__init__
    with pytest.warns(RuntimeWarning, match=r"setProtocolOptions\(failByDrop=\.\.\.\)"):
        assert autobahn_close.install() is False
    assert WebSocketFactory.__init__ is before
