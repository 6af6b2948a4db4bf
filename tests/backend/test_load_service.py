"""load_service: build the configured TaskService, one per event loop."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from progrock.exceptions import ImproperlyConfigured
from progrock.services import aclose_service, build_service, load_service, preload
from progrock.services.http import HttpTaskService

HTTP = "progrock.services.http.HttpTaskService"


class NotAService:
    """Has none of the TaskService methods."""


def configure(settings: SettingsWrapper, backend: str, **options: Any) -> None:
    settings.PROGROCK = {"SERVICE": {"BACKEND": backend, "OPTIONS": options}}


async def test_builds_configured_http_service(settings: SettingsWrapper) -> None:
    """The default backend path with OPTIONS builds an HttpTaskService with those kwargs."""
    configure(settings, HTTP, url="http://127.0.0.1:9/", timeout=2.5, batch_size=10)
    service = load_service()
    try:
        assert isinstance(service, HttpTaskService)
        assert (service.url, service.timeout, service.batch_size) == (
            "http://127.0.0.1:9",
            2.5,
            10,
        )
    finally:
        await aclose_service()


async def test_cached_per_loop_until_settings_change(settings: SettingsWrapper) -> None:
    """Repeated calls in one loop reuse the instance; a settings change builds a new one."""
    configure(settings, HTTP, url="http://127.0.0.1:9")
    first = load_service()
    try:
        assert load_service() is first
        configure(settings, HTTP, url="http://127.0.0.1:10")
        second = load_service()
        assert second is not first
        assert isinstance(second, HttpTaskService) and second.url == "http://127.0.0.1:10"
        assert load_service() is second
    finally:
        await aclose_service()


def test_each_loop_gets_its_own_instance(settings: SettingsWrapper) -> None:
    """Two event loops get two instances (an aiohttp session cannot cross loops)."""
    configure(settings, HTTP, url="http://127.0.0.1:9")

    async def get() -> object:
        service = load_service()
        same = load_service() is service
        await aclose_service()
        return service if same else None

    one, two = asyncio.run(get()), asyncio.run(get())
    assert one is not None and two is not None and one is not two


def test_outside_a_loop_builds_a_fresh_instance(settings: SettingsWrapper) -> None:
    """Without a running loop each call builds a new, uncached instance."""
    configure(settings, HTTP, url="http://127.0.0.1:9")
    assert load_service() is not load_service()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"BACKEND": "no.such.module.Service"}, "'no.such.module.Service' cannot be imported"),
        ({"BACKEND": "progrock.services.http.Nope"}, "'progrock.services.http.Nope' cannot be"),
        ({"BACKEND": "progrock.services.http.MAX_BATCH"}, "is not a class or factory: 1000"),
        (
            {"BACKEND": f"{__name__}.NotAService"},
            "lacks the TaskService methods ['create', 'status_many', 'cancel', 'aclose']",
        ),
        ({"BACKEND": HTTP, "OPTIONS": {"url": "http://x", "retries": 3}}, "'retries'"),
        ({"BACKEND": HTTP, "OPTIONS": {}}, "missing 1 required positional argument: 'url'"),
        ({"BACKEND": HTTP, "OPTIONS": {"url": "ftp://x"}}, "http(s) URL, got 'ftp://x'"),
        (
            {"BACKEND": HTTP, "OPTIONS": {"url": "http://x", "timeout": 0}},
            "timeout must be a positive number of seconds, got 0",
        ),
        (
            {"BACKEND": HTTP, "OPTIONS": {"url": "http://x", "batch_size": 1001}},
            "batch_size must be an integer within 1..1000, got 1001",
        ),
        ({"BACKEND": HTTP, "OPTIONS": ["url"]}, "must be a dict of keyword arguments"),
    ],
)
def test_bad_configuration_is_improperly_configured(config: dict[str, Any], message: str) -> None:
    """Bad paths and bad options raise ImproperlyConfigured with a precise message."""
    with pytest.raises(ImproperlyConfigured) as info:
        build_service(config)
    assert message in str(info.value)


def test_bad_setting_surfaces_through_load_service(settings: SettingsWrapper) -> None:
    """load_service raises ImproperlyConfigured for a bad PROGROCK['SERVICE']."""
    configure(settings, "no.such.Service")
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        load_service()


def test_preload_imports_the_configured_module_and_survives_a_bad_path(
    settings: SettingsWrapper, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runprogrock imports the service's module before its first message."""
    (tmp_path / "preload_probe_service.py").write_text("class Service:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "preload_probe_service", raising=False)
    configure(settings, "preload_probe_service.Service")
    assert preload() is True
    assert "preload_probe_service" in sys.modules
    configure(settings, "no_such_module_anywhere.Service")
    assert preload() is False  # the first message reports it, with the setting's name
    settings.PROGROCK = {"SERVICE": "not a dict"}
    assert preload() is False
