"""System checks through ``manage.py check`` (and ``--deploy``), with override_settings:
each message has its progrock id, names the key, quotes the value and says the fix."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from progrock import checks
from progrock.exceptions import ImproperlyConfigured

GOOD_LAYERS = settings.CHANNEL_LAYERS


def check(*args: str) -> str:
    """Run ``manage.py check --tag progrock``; everything it printed (and the errors)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("check", "--tag", "progrock", *args, stdout=out, stderr=err)
    except SystemCheckError as exc:
        return f"{exc}\n{out.getvalue()}{err.getvalue()}"
    return out.getvalue() + err.getvalue()


def errors(**overrides: Any) -> str:
    """The SystemCheckError text ``check`` raises under ``overrides`` (it must raise)."""
    with override_settings(**overrides), pytest.raises(SystemCheckError) as raised:
        call_command("check", "--tag", "progrock", stdout=io.StringIO(), stderr=io.StringIO())
    return str(raised.value)


def test_the_demo_settings_pass_every_check_deploy_included() -> None:
    """The example project is clean, with and without --deploy."""
    assert "System check identified no issues" in check()
    assert "System check identified no issues" in check("--deploy")


def test_a_misspelt_key_is_an_error_naming_it_quoting_it_and_the_right_one() -> None:
    """PROGROCK["POLL_INTERVALL"]: progrock.E002, the closest key, the value, the fix."""
    text = errors(PROGROCK={"POLL_INTERVALL": 0.5})
    assert "progrock.E002" in text
    assert "'POLL_INTERVALL' (did you mean 'POLL_INTERVAL'?)" in text
    assert "(its value: 0.5)" in text and "Correct the key's spelling or remove it" in text


def test_a_removed_setting_says_what_replaced_it() -> None:
    """A setting that is no longer one (STALL_AFTER) is E002 saying what to do instead."""
    text = errors(PROGROCK={"STALL_AFTER": 5})
    assert "progrock.E002" in text and "no longer a setting" in text


def test_every_bad_key_is_reported_not_only_the_first() -> None:
    """Two wrong values and a misspelt key: three messages, each naming its key."""
    text = errors(PROGROCK={"POLL_INTERVAL": "fast", "KINDS": "rock", "RETENSION": "30d"})
    assert text.count("progrock.E003") == 2 and text.count("progrock.E002") == 1
    assert "PROGROCK['POLL_INTERVAL'] must be a positive number of seconds, got 'fast'" in text
    assert "PROGROCK['KINDS'] must be a non-empty list of non-empty strings, or None" in text
    assert "remove it for the default 0.2" in text


def test_a_bad_retention_is_an_error_quoting_it() -> None:
    """RETENTION "30 days": E003 with the accepted shapes."""
    text = errors(PROGROCK={"RETENTION": "30 days"})
    assert "progrock.E003" in text and "PROGROCK['RETENTION'] must be a duration like 30d" in text
    assert "got '30 days'" in text


def test_progrock_that_is_not_a_dict_is_e001() -> None:
    """settings.PROGROCK = [...]: E001 quoting it."""
    text = errors(PROGROCK=[("KINDS", None)])
    assert "progrock.E001" in text and "must be a dict, got list: [('KINDS', None)]" in text


def test_a_default_kind_outside_kinds_is_e004() -> None:
    """DEFAULT_KIND "rock" with KINDS ["report"]: a bare start would be refused."""
    text = errors(PROGROCK={"KINDS": ["report"]})
    assert "progrock.E004" in text and "'rock', which is not one of" in text


def test_a_push_timeout_within_two_poll_intervals_is_w006() -> None:
    """PUSH_TIMEOUT 0.3 with POLL_INTERVAL 0.2: steady producers could fail as lost."""
    with override_settings(PROGROCK={"PUSH_TIMEOUT": 0.3}):
        text = check()
    assert "progrock.W006" in text and "PUSH_TIMEOUT'] is 0.3" in text
    with override_settings(PROGROCK={"PUSH_TIMEOUT": 5}):
        assert "progrock.W006" not in check()


def test_dotted_paths_that_do_not_import_are_errors() -> None:
    """A misspelt SERVICE BACKEND is E005, a PERMISSION that is not a function E006."""
    text = errors(
        PROGROCK={
            "SERVICE": {"BACKEND": "progrock.services.htp.HttpTaskService"},
            "PERMISSION": "progrock.permissions",
        }
    )
    assert "progrock.E005" in text and "'progrock.services.htp.HttpTaskService'" in text
    assert "progrock.E006" in text


def test_service_options_that_do_not_fit_the_backend_are_e012() -> None:
    """A SERVICE without the url HttpTaskService needs is E012 naming the argument,
    unless every kind runs on a task queue (the service is never built then)."""
    no_url = {"BACKEND": "progrock.services.http.HttpTaskService"}
    text = errors(PROGROCK={"SERVICE": no_url})
    assert "progrock.E012" in text and "'url'" in text
    queues_only = {"export": "celery:progrock_demo.tasks.export"}
    only_queues = {"SERVICE": no_url, "KINDS": queues_only, "DEFAULT_KIND": "export"}
    with override_settings(PROGROCK=only_queues):
        assert "progrock.E012" not in check()
    with override_settings(PROGROCK={"SERVICE": {**no_url, "OPTIONS": {"url": "http://x:1"}}}):
        assert "progrock.E012" not in check()


def test_authenticators_that_do_not_import_are_e009() -> None:
    """An AUTHENTICATORS path that does not import, or is no callable, is E009."""
    text = errors(
        PROGROCK={
            "AUTHENTICATORS": [
                "progrock.auth.SignedTokenAuthentcator",
                "progrock.auth.SIGNED_TOKEN_SEP",
            ]
        }
    )
    assert text.count("progrock.E009") == 2
    assert "'progrock.auth.SignedTokenAuthentcator', which cannot be imported" in text
    assert "'progrock.auth.SIGNED_TOKEN_SEP', which is not callable" in text


def test_drf_tokens_without_the_authtoken_app_are_e010(installed_apps: list[str]) -> None:
    """DRFTokenAuthenticator without rest_framework.authtoken installed is E010; with it, none."""
    drf = {"AUTHENTICATORS": ["progrock.auth.DRFTokenAuthenticator"]}
    without = [a for a in installed_apps if a != "rest_framework.authtoken"]
    text = errors(PROGROCK=drf, INSTALLED_APPS=without)
    assert "progrock.E010" in text and "'rest_framework.authtoken' is not in INSTALLED_APPS" in text
    with override_settings(PROGROCK=drf, INSTALLED_APPS=[*without, "rest_framework.authtoken"]):
        assert "progrock.E010" not in check()


def test_a_missing_channel_layer_is_e007() -> None:
    """No CHANNEL_LAYERS: E007 with an example to paste."""
    text = errors(CHANNEL_LAYERS={})
    assert "progrock.E007" in text and "channels_redis.core.RedisChannelLayer" in text


def test_the_in_memory_layer_is_w001() -> None:
    """InMemoryChannelLayer: a warning that workers never see a message."""
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    ):
        text = check()
    assert "progrock.W001" in text and "never see a start or a tick" in text


def test_a_missing_asgi_application_is_e008() -> None:
    """ASGI_APPLICATION None: E008."""
    text = errors(ASGI_APPLICATION=None)
    assert "progrock.E008" in text and "settings.ASGI_APPLICATION is None" in text


@pytest.fixture
def installed_apps() -> Iterator[list[str]]:
    yield list(settings.INSTALLED_APPS)


def test_runserver_without_daphne_is_w002_under_debug(installed_apps: list[str]) -> None:
    """No 'daphne' with DEBUG on: runserver serves no socket (W002); with DEBUG off (a
    production site runs an ASGI server) nothing is said."""
    without = [a for a in installed_apps if a != "daphne"]
    with override_settings(INSTALLED_APPS=without, DEBUG=True):
        text = check()
    assert "progrock.W002" in text and "the socket at /prog/ is a 404" in text
    with override_settings(INSTALLED_APPS=without, DEBUG=False):
        assert "progrock.W002" not in check()


def test_daphne_after_staticfiles_is_w003(installed_apps: list[str]) -> None:
    """'daphne' listed after staticfiles: its runserver loses (W003)."""
    reordered = [a for a in installed_apps if a != "daphne"] + ["daphne"]
    with override_settings(INSTALLED_APPS=reordered, DEBUG=True):
        text = check()
    assert "progrock.W003" in text and "Move 'daphne' before" in text


def test_no_staticfiles_is_w004(installed_apps: list[str]) -> None:
    """Without django.contrib.staticfiles, progrock.js is not served (W004)."""
    without = [a for a in installed_apps if a != "django.contrib.staticfiles"]
    with override_settings(INSTALLED_APPS=without):
        text = check()
    assert "progrock.W004" in text and "progrock/progrock.js" in text


def test_deploy_checks_flag_open_kinds_no_limit_and_small_capacity() -> None:
    """check --deploy: KINDS None (W010), no per-owner limit (W011), the layer's default
    capacity of 100 on the shared channels (W012, for each)."""
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    with override_settings(
        PROGROCK={"KINDS": None, "MAX_RUNNING_PER_OWNER": None}, CHANNEL_LAYERS=layers
    ):
        assert "progrock.W010" not in check()  # deploy checks only with --deploy
        text = check("--deploy")
    assert "progrock.W010" in text and "progrock.W011" in text
    assert (
        text.count("progrock.W012") == 2 and "holds at most 100 messages on 'prog-rocker'" in text
    )


def test_manage_py_check_prints_a_misspelt_key_once(tmp_path: Path) -> None:
    """A real `manage.py check` names a misspelt PROGROCK key once, as progrock.E002
    (the app's loading printed it a first time, as a bare line)."""
    (tmp_path / "misspelt_settings.py").write_text(
        "from progrock_demo.settings import *  # noqa: F403\n"
        'PROGROCK = {**PROGROCK, "POLL_INTERVALL": 0.5}  # noqa: F405\n'
    )
    example = Path(__file__).resolve().parents[2] / "example"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(example)]),
        "DJANGO_SETTINGS_MODULE": "misspelt_settings",
    }
    done = subprocess.run(
        [sys.executable, str(example / "manage.py"), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.count("unknown key 'POLL_INTERVALL'") == 1, output
    assert "(progrock.E002)" in output


def test_an_asgi_server_stops_on_bad_settings_when_it_loads_the_routes() -> None:
    """Importing progrock.routing (what asgi.py does) raises ImproperlyConfigured."""
    from progrock import routing

    try:
        with (
            override_settings(PROGROCK={"POLL_INTERVAL": -1}),
            pytest.raises(ImproperlyConfigured, match="POLL_INTERVAL"),
        ):
            importlib.reload(routing)
    finally:
        importlib.reload(routing)


@pytest.mark.parametrize("name", ["PROGROK", "PROGROCK_SETTINGS", "PROG_ROCK"])
def test_a_misnamed_progrock_dict_is_w007(name: str) -> None:
    """No PROGROCK but a dict setting named close to it: W007 naming it and the fix."""
    user = settings.PROGROCK
    with override_settings(**{name: dict(user)}):
        del settings.PROGROCK
        text = check()
    assert "progrock.W007" in text
    assert f"settings.{name} looks like a misspelt PROGROCK" in text
    assert f"Rename {name} to PROGROCK." in text


def test_progrock_present_or_unlike_names_give_no_w007() -> None:
    """With PROGROCK set, or only settings not named like it, there is no W007."""
    with override_settings(PROGROK={"POLL_INTERVAL": 1}):
        assert "progrock.W007" not in check()
    with override_settings(PROGRESS_BAR={"x": 1}, PROGROCK_VERSION="1"):
        del settings.PROGROCK
        assert "progrock.W007" not in check()


def layer(hosts: object, backend: str = "channels_redis.core.RedisChannelLayer") -> Any:
    return {"default": {"BACKEND": backend, "CONFIG": {"hosts": hosts}}}


@pytest.mark.parametrize(
    "hosts",
    [["redis://127.0.0.1:6379/0"], [("127.0.0.1", 6379)], [{"address": "redis://x:6379"}]],
)
def test_layer_hosts_without_socket_timeout_are_w008_under_redis_py_8(hosts: object) -> None:
    """channels_redis hosts keeping redis-py 8's 5 s socket_timeout: W008 naming the fix."""
    warnings = checks._socket_timeout_warnings(
        "channels_redis.core.RedisChannelLayer", layer(hosts)["default"], 8
    )
    assert [w.id for w in warnings] == ["progrock.W008"]
    assert "Timeout reading from" in warnings[0].msg
    assert '"socket_timeout": None' in warnings[0].hint


def test_socket_timeout_none_or_redis_py_7_give_no_w008() -> None:
    """Hosts with socket_timeout, redis-py 7, or another layer: no W008."""
    good = layer([{"address": "redis://x:6379", "socket_timeout": None}])["default"]
    bare = layer(["redis://x:6379"])["default"]
    assert checks._socket_timeout_warnings("channels_redis.core.RedisChannelLayer", good, 8) == []
    assert checks._socket_timeout_warnings("channels_redis.core.RedisChannelLayer", bare, 7) == []
    assert checks._socket_timeout_warnings("some.other.Layer", bare, 8) == []


def test_w008_runs_in_manage_py_check_with_the_installed_redis_py() -> None:
    """`manage.py check` gives W008 for bare hosts exactly when redis-py >= 8 is installed."""
    with override_settings(CHANNEL_LAYERS=layer(["redis://127.0.0.1:6379/0"])):
        text = check()
    assert ("progrock.W008" in text) == (checks._redis_major() >= 8)
