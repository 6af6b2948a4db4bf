"""A wrong DATABASE_URL or REDIS_URL: every process says so in one line at start and exits.

And a right DATABASE_URL: ``progrock up`` hands it to its children and migrates it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from progrock.local.redis_server import free_port
from tests.e2e.test_up import Up, get, progrock_command, stop_and_check

pytestmark = pytest.mark.e2e

TIMEOUT = 60
BAD_DATABASE = "postgres://rock:s3cret@127.0.0.1:{port}/progrock"


def run(argv: list[str], tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    """Run a command to its end with only ``env`` as its database/Redis settings;
    its exit code and its (stdout and stderr) lines."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    base.update(PROGROCK_DATA_DIR=str(tmp_path / "data"), **env)
    done = subprocess.run(
        argv,
        cwd=tmp_path,
        env=base,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).strip().splitlines()


def django(command: str) -> list[str]:
    return [sys.executable, "-m", "django", command, "--settings", "progrock_demo.settings"]


def up() -> list[str]:
    return [*progrock_command(), "up", "--port", "0", "--data-dir", "data"]


def test_up_refuses_a_malformed_database_url_in_one_line(tmp_path: Path) -> None:
    """progrock up: exit 2 and one line naming DATABASE_URL, the password masked."""
    code, lines = run(up(), tmp_path, DATABASE_URL="postgres://rock:s3cret@db:port/x")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("progrock up: DATABASE_URL must be postgres://"), lines
    assert "s3cret" not in lines[0] and "the port must be an integer" in lines[0], lines
    assert not (tmp_path / "data").exists(), "started something before refusing"


def test_up_refuses_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    """A PostgreSQL URL where nothing listens: exit 2 and one line, before any child."""
    pytest.importorskip("psycopg")
    url = BAD_DATABASE.format(port=free_port())
    code, lines = run(up(), tmp_path, DATABASE_URL=url)
    assert code == 2 and len(lines) == 1, lines
    masked = url.replace("s3cret", "***")
    assert lines[0].startswith(f"progrock up: DATABASE_URL: cannot connect to {masked}: "), lines
    assert not (tmp_path / "data").exists(), "started something before refusing"


def test_up_refuses_an_unreachable_redis_in_one_line(tmp_path: Path) -> None:
    """A REDIS_URL where nothing listens: exit 2 and one line naming it."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    code, lines = run(up(), tmp_path, REDIS_URL=url)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"progrock up: REDIS_URL: cannot reach Redis at {url}: "), lines


@pytest.mark.parametrize("command", ["runprogrock", "rundelay"])
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://127.0.0.1:{port}/0", "REDIS_URL: cannot reach Redis at redis://127.0.0.1:"),
        ("http://127.0.0.1:{port}/0", "REDIS_URL must be redis://HOST:PORT/DB"),
    ],
    ids=["unreachable", "malformed"],
)
def test_workers_and_delay_servers_refuse_a_bad_redis_url_in_one_line(
    tmp_path: Path, command: str, url: str, words: str
) -> None:
    """runprogrock and rundelay exit 1 at start with one CommandError line naming REDIS_URL."""
    code, lines = run(django(command), tmp_path, REDIS_URL=url.format(port=free_port()))
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"CommandError: {words}"), lines


def test_a_worker_refuses_an_unreachable_database_in_one_line(
    tmp_path: Path, redis_url: str
) -> None:
    """runprogrock (the process that writes task rows): one line naming DATABASE_URL."""
    pytest.importorskip("psycopg")
    port = free_port()
    url = BAD_DATABASE.format(port=port)
    code, lines = run(django("runprogrock"), tmp_path, DATABASE_URL=url, REDIS_URL=redis_url)
    assert code == 1 and len(lines) == 1, lines
    expected = f"CommandError: DATABASE_URL: cannot connect to postgresql at 127.0.0.1:{port}/"
    assert lines[0].startswith(expected), lines
    assert "s3cret" not in lines[0], lines


@pytest.mark.parametrize("command", ["runprogrock", "rundelay", "migrate"])
def test_any_django_process_refuses_a_malformed_database_url_in_one_line(
    tmp_path: Path, command: str
) -> None:
    """The demo's settings: a malformed DATABASE_URL ends any process at import, in one line."""
    code, lines = run(django(command), tmp_path, DATABASE_URL="postgresql://rock:s3cret@h/")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("DATABASE_URL must be postgres://USER:PASSWORD@HOST:PORT/NAME")
    assert "postgresql://rock:***@h/" in lines[0] and "no database name" in lines[0], lines


def test_up_runs_the_stack_on_the_database_url_it_is_given(
    postgres_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """progrock up with DATABASE_URL=postgres://…: it migrates that database, its
    processes use it (the page's session is stored there) and no SQLite file appears."""
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute("CREATE DATABASE progrock_up")
    url = postgres_server.rpartition("/")[0] + "/progrock_up"
    monkeypatch.setenv("DATABASE_URL", url)
    data = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = Up("--port", "0", "--data-dir", str(data), "--workers", "1", cwd=elsewhere)
    try:
        page = started.wait_up()
        assert f"  database: {url}" in started.lines, started.text()
        assert get(page + "/") == 200
        with psycopg.connect(url) as conn:
            migrated = conn.execute(
                "SELECT count(*) FROM django_migrations WHERE app = 'progrock'"
            ).fetchone()
            sessions = conn.execute("SELECT count(*) FROM django_session").fetchone()
        assert migrated is not None and migrated[0] >= 2, migrated
        assert sessions == (1,), sessions
        assert not (data / "db.sqlite3").exists()
        stop_and_check(started, lambda: os.kill(started.proc.pid, signal.SIGTERM))
    finally:
        started.close()
