"""The PROGROCK settings: defaults, typing, and a clear error for every bad value or key."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
from django.core import exceptions as django_exceptions
from django.test import override_settings

from progrock import conf
from progrock.conf import ProgRockSettings, get_settings, progrock_settings, protocol_limits
from progrock.exceptions import ImproperlyConfigured, ProgRockError

SETTINGS_DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "settings.md"

DURATIONS = ("POLL_INTERVAL", "FAILURE_BUDGET", "START_TIMEOUT", "SWEEP_INTERVAL")
NAMES = ("KEY_PREFIX", "DEFAULT_KIND", "PERMISSION")


def refused(user: object) -> str:
    """The message of the error ``settings.PROGROCK = user`` raises on first read."""
    with override_settings(PROGROCK=user), pytest.raises(ImproperlyConfigured) as info:
        get_settings()
    return str(info.value)


# -- defaults and types --------------------------------------------------------


def test_without_progrock_every_setting_has_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty PROGROCK gives the documented defaults; REDIS_URL falls back to localhost."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    with override_settings(PROGROCK={}):
        current = get_settings()
    assert current == ProgRockSettings()
    assert current.REDIS_URL == "redis://127.0.0.1:6379/0"
    assert current.POLL_INTERVAL == 0.2
    assert current.KINDS == ("rock", "hash")
    assert current.MAX_RUNNING_PER_OWNER == 20
    assert current.SERVICE["BACKEND"] == "progrock.services.http.HttpTaskService"


def test_redis_url_comes_from_the_environment_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PROGROCK['REDIS_URL'] (or with None) the REDIS_URL variable is used."""
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6380/2")
    with override_settings(PROGROCK={}):
        assert progrock_settings.REDIS_URL == "redis://cache.internal:6380/2"
    with override_settings(PROGROCK={"REDIS_URL": None}):
        assert progrock_settings.REDIS_URL == "redis://cache.internal:6380/2"
    with override_settings(PROGROCK={"REDIS_URL": "unix:///run/redis.sock"}):
        assert progrock_settings.REDIS_URL == "unix:///run/redis.sock"


def test_values_are_stored_with_their_declared_types() -> None:
    """Whole seconds become floats, a KINDS list a tuple, SERVICE a read-only mapping."""
    user = {
        "FAILURE_BUDGET": 30,
        "KINDS": ["import", "export"],
        "SERVICE": {"BACKEND": "my.Service", "OPTIONS": {"url": "http://x"}},
    }
    with override_settings(PROGROCK=user):
        current = get_settings()
    assert isinstance(current.FAILURE_BUDGET, float) and current.FAILURE_BUDGET == 30.0
    assert current.KINDS == ("import", "export")
    assert current.SERVICE == {"BACKEND": "my.Service", "OPTIONS": {"url": "http://x"}}
    with pytest.raises(TypeError):
        current.SERVICE["BACKEND"] = "other"  # type: ignore[index]
    user["KINDS"].append("later")  # the caller's list is not the settings' tuple
    assert current.KINDS == ("import", "export")


def test_none_is_accepted_where_documented() -> None:
    """KINDS None (the backend decides) and MAX_RUNNING_PER_OWNER None (no limit)."""
    with override_settings(PROGROCK={"KINDS": None, "MAX_RUNNING_PER_OWNER": None}):
        assert progrock_settings.KINDS is None
        assert progrock_settings.MAX_RUNNING_PER_OWNER is None


def test_authenticators_are_a_tuple_of_paths_and_none_by_default() -> None:
    """AUTHENTICATORS defaults to () (sessions only); a list of paths becomes a tuple."""
    assert ProgRockSettings().AUTHENTICATORS == ()
    paths = ["progrock.auth.SignedTokenAuthenticator", "progrock.auth.DRFTokenAuthenticator"]
    with override_settings(PROGROCK={"AUTHENTICATORS": paths}):
        assert tuple(paths) == progrock_settings.AUTHENTICATORS


def test_the_settings_are_frozen() -> None:
    """Neither the checked dataclass nor progrock_settings can be assigned to."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_settings().POLL_INTERVAL = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError, match="override_settings"):
        progrock_settings.POLL_INTERVAL = 1.0  # type: ignore[misc]


def test_override_settings_is_seen_and_undone() -> None:
    """A change of settings.PROGROCK drops the checked settings; the next read sees it."""
    before = get_settings()
    with override_settings(PROGROCK={"POLL_INTERVAL": 0.5, "KEY_PREFIX": "other:"}):
        assert progrock_settings.POLL_INTERVAL == 0.5
        assert progrock_settings.KEY_PREFIX == "other:"
        with override_settings(PROGROCK={"POLL_INTERVAL": 1.5}):
            assert progrock_settings.POLL_INTERVAL == 1.5
            assert progrock_settings.KEY_PREFIX == "progrock:"
        assert progrock_settings.POLL_INTERVAL == 0.5
    assert get_settings() == before


def test_reading_a_setting_that_does_not_exist_names_the_closest() -> None:
    """progrock_settings.NAME of no setting is an AttributeError suggesting the closest one."""
    expected = r"no ProgRock setting 'POLL_INTERVALL' \(did you mean 'POLL_INTERVAL'\?\)"
    with pytest.raises(AttributeError, match=expected):
        progrock_settings.POLL_INTERVALL  # type: ignore[attr-defined]  # noqa: B018


def test_protocol_limits_follow_the_settings() -> None:
    """What a client may start comes from KINDS and DEFAULT_KIND."""
    with override_settings(PROGROCK={"KINDS": ["import"], "DEFAULT_KIND": "import"}):
        limits = protocol_limits()
    assert limits.kinds == ("import",) and limits.default_kind == "import"


# -- bad values ----------------------------------------------------------------


BAD_SECONDS = [-0.001, 0, "0.001", True, None, math.nan, math.inf]


@pytest.mark.parametrize("bad", BAD_SECONDS, ids=repr)
@pytest.mark.parametrize("name", DURATIONS)
def test_a_duration_must_be_a_positive_finite_number_of_seconds(name: str, bad: object) -> None:
    """Each duration setting refuses anything but a positive finite number, quoting it."""
    message = refused({name: bad})
    assert message == f"PROGROCK[{name!r}] must be a positive number of seconds, got {bad!r}"


@pytest.mark.parametrize("bad", ["", 5, None, b"rock"], ids=repr)
@pytest.mark.parametrize("name", NAMES)
def test_a_name_must_be_a_non_empty_string(name: str, bad: object) -> None:
    """Prefixes, channels, the default kind and the permission path must be non-empty strings."""
    assert refused({name: bad}) == f"PROGROCK[{name!r}] must be a non-empty string, got {bad!r}"


@pytest.mark.parametrize(
    ("name", "bad", "expected"),
    [
        ("REDIS_URL", "", "a non-empty URL string (or None)"),
        ("REDIS_URL", 6379, "a non-empty URL string (or None)"),
        ("SERVICE", "progrock.services.http.HttpTaskService", "a dict with a dotted-path"),
        ("SERVICE", {"OPTIONS": {}}, "a dict with a dotted-path string 'BACKEND'"),
        ("SERVICE", {"BACKEND": ""}, "a dict with a dotted-path string 'BACKEND'"),
        ("SERVICE", {"BACKEND": "a.B", "OPTIONS": ["url"]}, "optional dict 'OPTIONS'"),
        ("SERVICE", {"BACKEND": "a.B", "OPTIONS": {1: "x"}}, "optional dict 'OPTIONS'"),
        ("KINDS", "rock", "a non-empty list of non-empty strings, or None"),
        ("KINDS", ["rock", 2], "a non-empty list of non-empty strings, or None"),
        ("KINDS", [], "a non-empty list of non-empty strings, or None"),
        ("KINDS", [""], "a non-empty list of non-empty strings, or None"),
        ("MAX_RUNNING_PER_OWNER", 0, "a positive integer or None"),
        ("MAX_RUNNING_PER_OWNER", 2.5, "a positive integer or None"),
        ("MAX_RUNNING_PER_OWNER", "20", "a positive integer or None"),
        ("MAX_RUNNING_PER_OWNER", True, "a positive integer or None"),
        ("AUTHENTICATORS", "progrock.auth.SignedTokenAuthenticator", "a list of dotted-path"),
        ("AUTHENTICATORS", ["progrock.auth.SignedTokenAuthenticator", ""], "a list of dotted"),
        ("AUTHENTICATORS", None, "a list of dotted-path strings (empty: sessions only)"),
    ],
    ids=repr,
)
def test_a_bad_value_is_refused_naming_the_key_and_quoting_it(
    name: str, bad: object, expected: str
) -> None:
    """Every other setting refuses a wrong type or value the same way."""
    message = refused({name: bad})
    assert message.startswith(f"PROGROCK[{name!r}] must be ")
    assert expected in message
    assert message.endswith(f", got {bad!r}")


def test_progrock_itself_must_be_a_dict() -> None:
    """A PROGROCK that is no mapping is refused, quoting it."""
    message = refused([("POLL_INTERVAL", 1)])
    assert message == "settings.PROGROCK must be a dict, got list: [('POLL_INTERVAL', 1)]"


def test_a_misspelt_service_key_suggests_the_right_one() -> None:
    """SERVICE's own keys are checked too: 'OPTION' suggests 'OPTIONS'."""
    message = refused({"SERVICE": {"BACKEND": "a.B", "OPTION": {}}})
    assert "PROGROCK['SERVICE'] has an unknown key 'OPTION' (did you mean 'OPTIONS'?)" in message


# -- unknown keys --------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "closest"),
    [("POLL_INTERVALL", "POLL_INTERVAL"), ("poll_interval", "POLL_INTERVAL"), ("KIND", "KINDS")],
)
def test_a_misspelt_key_suggests_the_closest_setting(key: str, closest: str) -> None:
    """An unknown key is refused, quoted, with the closest known key (difflib)."""
    message = refused({key: 1})
    assert message.startswith(
        f"settings.PROGROCK has an unknown key {key!r} (did you mean {closest!r}?); "
    )


def test_an_unknown_key_without_a_close_one_lists_the_settings() -> None:
    """With nothing close, the error lists every setting instead of guessing."""
    message = refused({"ZEBRA": 1})
    assert "unknown key 'ZEBRA';" in message and "did you mean" not in message
    assert "the settings are REDIS_URL, KEY_PREFIX," in message


def test_several_unknown_keys_are_all_named() -> None:
    """Every unknown key is named at once, not one per restart."""
    message = refused({"POLL_INTERVALL": 1, "ZEBRA": 2})
    assert "unknown keys 'POLL_INTERVALL' (did you mean 'POLL_INTERVAL'?), 'ZEBRA';" in message


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("GC_THRESHOLDS", "tune_gc(thresholds=...)"),
        ("TICK_GRID", "progrock.tuning.TICK_GRID"),
        ("DELAY_BATCH_WINDOW", "progrock.tuning.DELAY_BATCH_WINDOW"),
        ("TICK_LEAD", "ticks are delivered when due"),
        ("TICK_ALIGN", "one tick grid"),
        ("TICK_GRID_LIGHT", "one tick grid"),
        ("LIGHT_LOAD", "one tick grid"),
        ("STALL_AFTER", "SWEEP_INTERVAL"),
        ("WORKER_CHANNEL", "fixed at 'prog-rocker'"),
        ("DELAY_CHANNEL", "CHANNEL_LAYERS"),
    ],
)
def test_a_former_setting_says_what_replaced_it(key: str, instead: str) -> None:
    """An old settings file gets told what became of a removed setting."""
    message = refused({key: 1})
    assert f"unknown key {key!r} (no longer a setting: " in message
    assert instead in message


# -- the exception, and the documentation --------------------------------------


def test_the_error_is_djangos_improperly_configured_and_a_progrock_error() -> None:
    """Code catching either Django's ImproperlyConfigured or ProgRockError sees it."""
    assert issubclass(ImproperlyConfigured, django_exceptions.ImproperlyConfigured)
    assert issubclass(ImproperlyConfigured, ProgRockError)


def documented_settings() -> list[str]:
    """The setting names in the first column of the settings reference's table."""
    section = SETTINGS_DOC.read_text().split("## `PROGROCK` keys", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE)


def test_the_reference_table_lists_every_setting_once_within_the_budget() -> None:
    """docs/reference/settings.md documents exactly the settings there are, one row each,
    15 at most."""
    rows = documented_settings()
    assert rows == list(conf.SETTING_NAMES)
    assert len(rows) <= 15
