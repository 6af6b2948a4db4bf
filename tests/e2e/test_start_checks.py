"""A wrong DATABASE_URL or REDIS_URL: every process says so in one line at start.

A malformed one ends the process; one whose server does not answer ends
``progrock up`` but makes a worker wait for it.

And a right DATABASE_URL: ``progrock up`` hands it to its children and migrates it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from progrock.local.redis_server import free_port
from tests.e2e.test_up import get, stop_and_check
from tests.e2e.upprocess import Up, progrock_command

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
def test_workers_and_delay_servers_refuse_a_malformed_redis_url_in_one_line(
    tmp_path: Path, command: str
) -> None:
    """runprogrock and rundelay exit 1 at start with one CommandError line naming REDIS_URL."""
    url = f"http://127.0.0.1:{free_port()}/0"
    code, lines = run(django(command), tmp_path, REDIS_URL=url)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("CommandError: REDIS_URL must be redis://HOST:PORT/DB"), lines


def wait_for_line(process: subprocess.Popen[str], words: str) -> list[str]:
    """The process's output lines up to the first one containing ``words`` (it must not exit)."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:  # bounded by the process's own timeout below
        lines.append(line.rstrip())
        if words in line:
            return lines
    raise AssertionError(f"exited ({process.wait()}) without {words!r}: {lines}")


@contextlib.contextmanager
def waiting_worker(tmp_path: Path, **env: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """A runprogrock started with ``env`` as its database/Redis settings, and its output
    up to its "waiting for it" line; checked to be still waiting, then killed."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    base.update(PROGROCK_DATA_DIR=str(tmp_path / "data"), **env)
    process = subprocess.Popen(
        django("runprogrock"),
        cwd=tmp_path,
        env=base,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    timer = threading.Timer(TIMEOUT, process.kill)
    timer.start()
    try:
        lines = wait_for_line(process, "waiting for it")
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=3)  # still waiting, not exited
        yield process, lines
    finally:
        timer.cancel()
        process.kill()
        process.wait()


def test_a_worker_waits_for_an_unreachable_redis_saying_so_once(tmp_path: Path) -> None:
    """A well-formed REDIS_URL where nothing listens yet: runprogrock logs one line naming
    REDIS_URL and keeps waiting (under compose or systemd Redis may start later)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    with waiting_worker(tmp_path, REDIS_URL=url) as (process, lines):
        assert f"REDIS_URL: cannot reach Redis at {url}" in lines[-1], lines
        process.kill()
        rest = process.stdout.read() if process.stdout else ""
    assert "waiting for it" not in rest, rest  # one line, not one per retry


def test_a_worker_waits_for_an_unreachable_database_saying_so_once(
    tmp_path: Path, redis_url: str
) -> None:
    """runprogrock (the process that writes task rows): one line naming DATABASE_URL,
    the password masked, then it waits for the database."""
    pytest.importorskip("psycopg")
    port = free_port()
    url = BAD_DATABASE.format(port=port)
    with waiting_worker(tmp_path, DATABASE_URL=url, REDIS_URL=redis_url) as (_, lines):
        expected = f"DATABASE_URL: cannot connect to postgresql at 127.0.0.1:{port}/"
        assert expected in lines[-1], lines
        assert "s3cret" not in "\n".join(lines), lines


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
