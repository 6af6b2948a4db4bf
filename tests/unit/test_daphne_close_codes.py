"""progrock.contrib.daphne_close_codes: Daphne sends the close codes and reasons it is given.

Over real sockets: ``tests/e2e/test_rolling_restart.py``
(``test_sigterm_closes_web_sockets_with_1012_then_exits``).
"""

from __future__ import annotations

from collections.abc import Iterator

import daphne
import pytest
from daphne.ws_protocol import WebSocketProtocol

from progrock.contrib import daphne_close_codes


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Put Daphne's own handle_reply back (install() is process-wide)."""
    monkeypatch.setattr(daphne_close_codes.GUARD, "warned", False)
    original = WebSocketProtocol.handle_reply
    marked = getattr(WebSocketProtocol, daphne_close_codes._MARK, False)
    if marked:
        delattr(WebSocketProtocol, daphne_close_codes._MARK)
    yield
    WebSocketProtocol.handle_reply = original  # type: ignore[method-assign]
    if hasattr(WebSocketProtocol, daphne_close_codes._MARK):
        delattr(WebSocketProtocol, daphne_close_codes._MARK)
    if marked:
        setattr(WebSocketProtocol, daphne_close_codes._MARK, True)


def test_the_codes_an_endpoint_may_send() -> None:
    """1000-1003, 1007-1014 and 3000-4999: not the reserved 1004-1006 and 1015, nor others."""
    assert all(daphne_close_codes.sendable(c) for c in (1000, 1001, 1003, 1007, 1012, 1013, 1014))
    assert all(daphne_close_codes.sendable(c) for c in (3000, 4999))
    refused = (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, None, "1012", 1012.0)
    assert not any(daphne_close_codes.sendable(c) for c in refused)


def test_reasons_are_cut_to_a_close_frame_never_inside_a_character() -> None:
    """At most 123 bytes of UTF-8, cut before a character that would not fit whole."""
    assert daphne_close_codes.reason_bytes("server restarting") == b"server restarting"
    assert daphne_close_codes.reason_bytes("") is None
    assert daphne_close_codes.reason_bytes(None) is None
    cut = daphne_close_codes.reason_bytes("é" * 100)
    assert cut is not None and len(cut) == 122 and cut.decode() == "é" * 61


def test_install_wraps_daphne_once(restored: None) -> None:
    """install() wraps Daphne's handle_reply once, however often it is called."""
    before = WebSocketProtocol.handle_reply
    assert daphne_close_codes.install() is True
    wrapped = WebSocketProtocol.handle_reply
    assert wrapped is not before and wrapped.__wrapped__ is before  # type: ignore[attr-defined]
    assert daphne_close_codes.install() is True
    assert WebSocketProtocol.handle_reply is wrapped


def test_an_untested_daphne_is_left_alone_with_one_warning(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the tested range: install() is False, warns once, handle_reply stays Daphne's."""
    monkeypatch.setattr(daphne, "__version__", "4.3.0")
    before = WebSocketProtocol.handle_reply
    with pytest.warns(RuntimeWarning) as caught:
        assert daphne_close_codes.install() is False
        assert daphne_close_codes.install() is False
    assert len(caught) == 1
    assert "Daphne '4.3.0'" in str(caught[0].message)
    assert WebSocketProtocol.handle_reply is before
