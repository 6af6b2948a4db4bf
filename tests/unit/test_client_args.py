"""Pure parsing of the terminal client's command-line values, and its argparse wiring."""

from __future__ import annotations

import argparse

import pytest

from progrock.client.args import (
    ArgumentValueError,
    home_page,
    origin,
    parse_kind,
    parse_param,
    parse_params,
    parse_task_id,
    parse_url,
    parse_value,
    socket_url,
    watch_command,
)
from progrock.client.cli import add_client_parsers


def test_values_parse_as_json_when_they_can() -> None:
    """Numbers, booleans, null, lists and objects come out as JSON values."""
    assert parse_value("64") == 64
    assert parse_value("2.5") == 2.5
    assert parse_value("true") is True
    assert parse_value("null") is None
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value('{"a": 1}') == {"a": 1}
    assert parse_value('"64"') == "64"


def test_values_that_are_not_json_stay_strings() -> None:
    """Bare words, empty values and the non-JSON constants NaN/Infinity stay strings."""
    assert parse_value("x") == "x"
    assert parse_value("") == ""
    assert parse_value("hello world") == "hello world"
    assert parse_value("NaN") == "NaN"
    assert parse_value("-Infinity") == "-Infinity"


def test_param_splits_on_the_first_equals_sign() -> None:
    """``key=a=b`` gives key ``key`` and the string ``a=b``."""
    assert parse_param("mb=64") == ("mb", 64)
    assert parse_param("label=x") == ("label", "x")
    assert parse_param("expr=a=b") == ("expr", "a=b")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("mb", "expected key=value, got 'mb'"), ("=5", "non-empty key before '=', got '=5'")],
)
def test_bad_params_are_rejected_quoting_the_value(text: str, expected: str) -> None:
    """A param without ``=`` or without a key is an error that quotes it."""
    with pytest.raises(ArgumentValueError, match=expected):
        parse_param(text)


def test_params_combine_and_refuse_repeated_keys() -> None:
    """Several params make one object; a repeated key is an error naming it."""
    assert parse_params(["mb=64", "label=x"]) == {"mb": 64, "label": "x"}
    with pytest.raises(ArgumentValueError, match="got 'mb' again in 'mb=2'"):
        parse_params(["mb=1", "mb=2"])


def test_url_is_normalised() -> None:
    """A trailing slash, query and fragment are dropped; scheme and port are kept."""
    assert parse_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert parse_url("https://example.test/?x=1#y") == "https://example.test"


@pytest.mark.parametrize("text", ["127.0.0.1:8000", "ftp://host/", "http://", "http://h:99999"])
def test_bad_urls_are_rejected_quoting_the_value(text: str) -> None:
    """Anything but an http(s) URL with a host and a valid port is an error quoting it."""
    with pytest.raises(ArgumentValueError, match=repr(text).replace("[", r"\[")):
        parse_url(text)


def test_socket_url_origin_and_home_page_derive_from_the_url() -> None:
    """http gives ws, https gives wss; the socket is at /prog/ and the Origin has no path."""
    assert socket_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/prog/"
    assert socket_url("https://example.test/app") == "wss://example.test/prog/"
    assert origin("https://example.test:8443/app") == "https://example.test:8443"
    assert home_page("http://127.0.0.1:8000/app") == "http://127.0.0.1:8000/"


def test_task_id_must_be_a_uuid() -> None:
    """A UUID is canonicalised; anything else is an error quoting it."""
    assert (
        parse_task_id("6F9619FF-8B86-D011-B42D-00C04FC964FF")
        == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    )
    with pytest.raises(ArgumentValueError, match="got 'abc'"):
        parse_task_id("abc")


def test_kind_must_not_be_blank() -> None:
    """A blank kind is an error; a kind is stripped."""
    assert parse_kind(" rock ") == "rock"
    with pytest.raises(ArgumentValueError, match="got ' '"):
        parse_kind(" ")


def test_watch_command_is_shell_quoted() -> None:
    """The printed watch line can be pasted into a shell as is."""
    line = watch_command("abc", "http://h:1", "k y")
    assert line == "progrock watch abc --session 'k y' --url http://h:1"
    assert watch_command("abc", "http://h:1", None) == "progrock watch abc --url http://h:1"


def test_watch_command_with_a_token_asks_for_it_without_printing_it() -> None:
    """With a token the line ends in ``--token TOKEN`` and drops any session key."""
    line = watch_command("abc", "http://h:1", "key", token=True)
    assert line == "progrock watch abc --url http://h:1 --token TOKEN"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="progrock", exit_on_error=False)
    add_client_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def test_run_parser_collects_params_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` gathers --param into a dict and takes URL and session from the environment."""
    monkeypatch.setenv("PROGROCK_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("PROGROCK_SESSION", "abc")
    args = _parser().parse_args(["run", "rock", "--param", "mb=64", "--param", "label=x"])
    assert args.kind == "rock"
    assert args.params == {"mb": 64, "label": "x"}
    assert args.url == "http://127.0.0.1:9"
    assert args.session == "abc"
    assert args.reconnect_attempts == 5
    assert args.json_mode is False
    assert callable(args.func)


def test_parser_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $PROGROCK_URL the URL is http://127.0.0.1:8000 and there is no session."""
    monkeypatch.delenv("PROGROCK_URL", raising=False)
    monkeypatch.delenv("PROGROCK_SESSION", raising=False)
    args = _parser().parse_args(["watch", "6f9619ff-8b86-d011-b42d-00c04fc964ff", "--json"])
    assert args.url == "http://127.0.0.1:8000"
    assert args.session is None
    assert args.json_mode is True
    assert args.task_id == "6f9619ff-8b86-d011-b42d-00c04fc964ff"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "rock", "--param", "oops"], "expected key=value, got 'oops'"),
        (["run", "rock", "--param", "a=1", "--param", "a=2"], "got 'a' again in 'a=2'"),
        (["watch", "nope"], "expected a task id (a UUID), got 'nope'"),
        (["run", "rock", "--url", "ftp://x"], "got 'ftp://x'"),
        (["run", "rock", "--reconnect-attempts", "-1"], "expected an integer >= 0, got '-1'"),
    ],
)
def test_usage_errors_exit_2_quoting_the_value(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad command-line value stops argparse with exit 2 and a message quoting it."""
    parser = argparse.ArgumentParser(prog="progrock")
    add_client_parsers(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2
    assert expected in capsys.readouterr().err
