"""progrock.database_url: DATABASE_URL to a DATABASES entry, and one-line errors."""

from __future__ import annotations

import pytest

from progrock.database_url import mask_password, parse_database_url
from progrock.exceptions import ImproperlyConfigured


def test_a_postgres_url_gives_every_connection_field() -> None:
    """User, password, host, port and name come out of the URL, percent-decoded."""
    entry = parse_database_url("postgres://rock:p%40ss%3Aword@db.example:6543/prog%20rock")
    assert entry == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "prog rock",
        "USER": "rock",
        "PASSWORD": "p@ss:word",
        "HOST": "db.example",
        "PORT": "6543",
    }


def test_postgresql_scheme_defaults_and_query_options() -> None:
    """postgresql:// works too; no user/port leaves them to libpq; the query becomes OPTIONS."""
    entry = parse_database_url("postgresql://127.0.0.1/rock?sslmode=require&application_name=pr")
    assert (entry["HOST"], entry["PORT"], entry["USER"], entry["PASSWORD"]) == (
        "127.0.0.1",
        "",
        "",
        "",
    )
    assert entry["OPTIONS"] == {"sslmode": "require", "application_name": "pr"}


def test_a_percent_encoded_host_is_a_socket_folder() -> None:
    """%2F in the host spells a Unix socket folder, kept in its original case."""
    entry = parse_database_url("postgres://me@%2FVar%2Frun%2Fpostgresql:5433/rock")
    assert (entry["HOST"], entry["PORT"], entry["USER"]) == ("/Var/run/postgresql", "5433", "me")


def test_an_ipv6_host() -> None:
    """A bracketed IPv6 address is the host, without its brackets."""
    assert parse_database_url("postgres://[::1]:5432/rock")["HOST"] == "::1"


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:////var/lib/progrock/db.sqlite3", "/var/lib/progrock/db.sqlite3"),
        ("sqlite:///relative/db.sqlite3", "relative/db.sqlite3"),
        ("sqlite:///:memory:", ":memory:"),
        ("SQLITE:///with%20space.db", "with space.db"),
    ],
)
def test_sqlite_urls_name_a_file(url: str, name: str) -> None:
    """Everything after sqlite:/// is the path (a fourth slash makes it absolute)."""
    assert parse_database_url(url) == {"ENGINE": "django.db.backends.sqlite3", "NAME": name}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://u@h/db", "unknown scheme mysql:"),
        ("/just/a/path", "unknown scheme (none)"),
        ("postgres:/db", "'//' must follow postgres:"),
        ("postgres://u@h:5432", "no database name"),
        ("postgres://u@h:5432/", "no database name"),
        ("postgres://u@h/a/b", "a '/' in the name"),
        ("postgres://u@h:port/db", "the port must be an integer in 0..65535"),
        ("postgres://u@h:99999/db", "the port must be an integer in 0..65535"),
        ("postgres://u@h/db?sslmode", "is not key=value pairs"),
        ("postgres://u@h/db?a=1&a=2", "names 'a' twice"),
        ("sqlite://host/db", "a sqlite URL has no host"),
        ("sqlite:///", "no path after sqlite:///"),
        ("http://[::1/db", "Invalid IPv6 URL"),
    ],
)
def test_malformed_urls_are_refused_naming_the_variable(url: str, reason: str) -> None:
    """One line: the variable, the shapes it must have, the value and what is wrong."""
    with pytest.raises(ImproperlyConfigured) as caught:
        parse_database_url(url, variable="MY_DB")
    message = str(caught.value)
    assert message.startswith("MY_DB must be postgres://USER:PASSWORD@HOST:PORT/NAME"), message
    assert reason in message and "\n" not in message, message
    assert repr(url) in message or "Invalid IPv6" in message, message


@pytest.mark.parametrize("url", ["", "   ", None])
def test_an_empty_url_is_refused(url: object) -> None:
    """Nothing at all is no URL either (the settings fall back before calling)."""
    with pytest.raises(ImproperlyConfigured, match=r"^DATABASE_URL must be .*, got "):
        parse_database_url(url)  # type: ignore[arg-type]


def test_errors_never_show_the_password() -> None:
    """A refused URL is quoted with its password masked."""
    with pytest.raises(ImproperlyConfigured) as caught:
        parse_database_url("postgres://rock:s3cret@h:0x10/db")
    assert "s3cret" not in str(caught.value)
    assert "'postgres://rock:***@h:0x10/db'" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://rock:s3cret@h:5432/db?x=1", "postgres://rock:***@h:5432/db?x=1"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("postgres://rock@h/db", "postgres://rock@h/db"),
        ("sqlite:////tmp/db", "sqlite:////tmp/db"),
    ],
)
def test_mask_password(url: str, shown: str) -> None:
    """The password alone is replaced; a URL without one is unchanged."""
    assert mask_password(url) == shown
