"""progrock.contrib.autobahn_logs: Autobahn's per-frame debug arguments become plain values."""

from __future__ import annotations

import importlib

import pytest

from progrock.contrib import autobahn_logs


@pytest.fixture
def restored() -> object:
    """Put Autobahn's own helpers back after the test (install() is process-wide)."""
    modules = [importlib.import_module(name) for name in autobahn_logs.MODULES]
    saved = [(m, m.hltype, m.hlval) for m in modules]  # type: ignore[attr-defined]
    yield modules
    for module, hltype, hlval in saved:
        module.hltype, module.hlval = hltype, hlval  # type: ignore[attr-defined]


def test_install_makes_the_helpers_return_their_argument(restored: list[object]) -> None:
    from autobahn.util import hlval as styled

    for module in restored:
        assert module.hlval is styled  # type: ignore[attr-defined]  # Autobahn's own, before
    assert autobahn_logs.install() is True
    assert autobahn_logs.install() is True  # again: harmless
    for module in restored:
        assert module.hlval(42) == 42  # type: ignore[attr-defined]
        assert module.hlval("peer", color="white", bold=True) == "peer"  # type: ignore[attr-defined]
        method = test_install_makes_the_helpers_return_their_argument
        assert module.hltype(method) is method  # type: ignore[attr-defined]
    # The rest of Autobahn is untouched: its own helper still styles.
    import autobahn.util

    assert autobahn.util.hlval is styled
