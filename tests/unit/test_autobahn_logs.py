"""progrock.contrib.autobahn_logs: Autobahn's per-frame debug arguments become plain values."""

from __future__ import annotations

import importlib
import warnings

import pytest

from progrock.contrib import autobahn_logs


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> object:
    """Put Autobahn's own helpers back after the test (install() is process-wide)."""
    monkeypatch.setattr(autobahn_logs.GUARD, "warned", False)
    modules = [importlib.import_module(name) for name in autobahn_logs.MODULES]
    saved = [(m, m.hltype, m.hlval) for m in modules]  # type: ignore[attr-defined]
    yield modules
    for module, hltype, hlval in saved:
        module.hltype, module.hlval = hltype, hlval  # type: ignore[attr-defined]


def test_install_makes_the_helpers_return_their_argument(restored: list[object]) -> None:
    """On the tested Autobahn both helpers of both modules return their argument, silently."""
    from autobahn.util import hlval as styled

    for module in restored:
        assert module.hlval is styled  # type: ignore[attr-defined]  # Autobahn's own, before
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a word on the tested version
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


def helpers(modules: list[object]) -> list[object]:
    return [getattr(m, h) for m in modules for h in autobahn_logs.HELPERS]


def test_an_untested_autobahn_is_left_alone_with_one_warning(
    restored: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the tested range: install() is False, warns once, every helper stays Autobahn's."""
    import autobahn

    monkeypatch.setattr(autobahn, "__version__", "27.2.0")
    before = helpers(restored)
    with pytest.warns(RuntimeWarning) as caught:
        assert autobahn_logs.install() is False
        assert autobahn_logs.install() is False
    assert len(caught) == 1
    assert "Autobahn '27.2.0'" in str(caught[0].message)
    assert ">=26.10.2, <27" in str(caught[0].message)
    assert all(a is b for a, b in zip(helpers(restored), before, strict=True))


def test_a_helper_missing_in_one_module_means_no_module_is_changed(
    restored: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No half-patch: the first module keeps its helpers when the second lacks one."""
    first, second = restored
    monkeypatch.delattr(second, "hlval")  # as if Autobahn stopped importing it there
    before = [first.hltype, first.hlval, second.hltype]  # type: ignore[attr-defined]
    with pytest.warns(RuntimeWarning, match=r"has no autobahn\.twisted\.websocket\.hlval"):
        assert autobahn_logs.install() is False
    after = [first.hltype, first.hlval, second.hltype]  # type: ignore[attr-defined]
    assert all(a is b for a, b in zip(after, before, strict=True))
