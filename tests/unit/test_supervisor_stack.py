"""``progrock up``'s options and :class:`~progrock.local.stack.Stack`'s checks (no processes)."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from pathlib import Path

import pytest

from progrock.exceptions import ProgRockError
from progrock.local.stack import Stack, add_up_parser, default_data_dir, web_command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="progrock")
    add_up_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["up", *argv])


def test_up_defaults() -> None:
    """`progrock up` defaults to 127.0.0.1:8000, two workers, the XDG data dir."""
    args = parse()
    assert (args.port, args.host, args.workers, args.web) == (8000, "127.0.0.1", 2, 1)
    assert args.data_dir is None and args.backend_url is None and args.poll_interval is None
    assert args.access_log is False
    assert callable(args.func)


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_web_access_log_is_off_unless_asked_for(server: str) -> None:
    """No line per request and per socket connect/disconnect by default, on either server."""
    quiet = web_command(server, "python", "127.0.0.1", 8000)
    loud = web_command(server, "python", "127.0.0.1", 8000, access_log=True)
    if server == "daphne":
        assert quiet[quiet.index("--access-log") + 1] == os.devnull
        assert "--access-log" not in loud
    else:
        assert "--no-access-log" in quiet and "--no-access-log" not in loud
    assert parse("--access-log").access_log is True


def test_up_options_are_parsed() -> None:
    """Every documented option reaches the namespace with the right type."""
    args = parse(
        "--port", "0", "--host", "0.0.0.0", "--workers", "4", "--data-dir", "/tmp/x",
        "--backend-url", "http://127.0.0.1:9", "--poll-interval", "0.05", "--web", "3",
    )  # fmt: skip
    assert (args.port, args.host, args.workers, args.web) == (0, "0.0.0.0", 4, 3)
    assert args.data_dir == Path("/tmp/x")
    assert args.backend_url == "http://127.0.0.1:9"
    assert args.poll_interval == 0.05


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "expected an integer >= 1, got '0'"),
        (["--port", "70000"], "expected a port in 0..65535, got '70000'"),
        (["--port", "http"], "expected an integer, got 'http'"),
        (["--poll-interval", "-1"], "expected a positive number of seconds, got '-1'"),
        (["--poll-interval", "soon"], "expected a number of seconds, got 'soon'"),
    ],
)
def test_bad_up_options_are_quoted(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad option value is refused with a message quoting it."""
    with pytest.raises(SystemExit):
        parse(*argv)
    assert message in capsys.readouterr().err


def test_default_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default data dir is $XDG_DATA_HOME/progrock when XDG_DATA_HOME is set."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "progrock"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "workers must be an integer >= 1, got 0"),
        ({"web_processes": True}, "web_processes must be an integer >= 1, got True"),
        ({"port": -1}, "port must be an integer in 0..65535, got -1"),
    ],
)
def test_stack_rejects_bad_arguments(options: dict[str, object], message: str) -> None:
    """Stack() refuses bad arguments, quoting them."""
    with pytest.raises(ProgRockError, match=message):
        Stack(**options)  # type: ignore[arg-type]


def test_stack_refuses_a_busy_port_before_starting_anything(tmp_path: Path) -> None:
    """A web port in use fails start() at once, naming it, with no process started."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = Stack(port=port, data_dir=tmp_path)
        with pytest.raises(ProgRockError, match=f"cannot listen on 127.0.0.1:{port}"):
            stack.start()
    assert stack.supervisor.children == {}
    assert stack.pids() == {}


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8123"),
        ("0.0.0.0", "http://127.0.0.1:8123"),
        ("::", "http://[::1]:8123"),
        ("::1", "http://[::1]:8123"),
    ],
)
def test_stack_urls_point_at_a_reachable_address(host: str, url: str, tmp_path: Path) -> None:
    """A stack bound to every address advertises the loopback one; IPv6 hosts get brackets."""
    stack = Stack(host=host, data_dir=tmp_path)
    try:
        assert stack.url == ""  # not started: no port yet
        stack.ports = [8123]
        assert stack.url == url
        assert stack.ws_url == url.replace("http://", "ws://") + "/prog/"
    finally:
        stack.stop()


def _consecutive_free_ports(count: int) -> int:
    for first in range(20000, 60000, 97):
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError("no free ports")


def test_several_web_processes_listen_on_consecutive_ports() -> None:
    """`progrock up --port P --web 3` uses P, P+1 and P+2, and says which one is taken."""
    first = _consecutive_free_ports(3)
    stack = Stack(port=first, web_processes=3)
    with contextlib.ExitStack() as held:
        assert stack._web_ports(held) == [first, first + 1, first + 2]
    with socket.socket() as taken, contextlib.ExitStack() as held:
        taken.bind(("127.0.0.1", first + 2))
        taken.listen()
        with pytest.raises(ProgRockError, match=f"127.0.0.1:{first + 2}"):
            stack._web_ports(held)


def test_metrics_ports_go_to_the_delay_server_then_each_worker() -> None:
    """`progrock up --metrics-port P --workers 2`: rundelay on P, the workers on P+1 and
    P+2 (each told `--metrics-port HOST:PORT`); without the option, none."""
    assert parse("--metrics-port", "9100").metrics_port == 9100 and parse().metrics_port is None
    first = _consecutive_free_ports(3)
    stack = Stack(workers=2, metrics_port=first)
    with contextlib.ExitStack() as held:
        stack.metrics_ports = stack._pick_metrics_ports(held)
    assert stack.metrics_ports == {"delay": first, "worker-1": first + 1, "worker-2": first + 2}
    assert stack._metrics_args("worker-2") == ["--metrics-port", f"127.0.0.1:{first + 2}"]
    assert Stack(workers=2)._metrics_args("worker-1") == []


def test_ports_a_stack_picks_are_held_until_all_are_picked() -> None:
    """No pick returns a port another pick of the same stack holds (the backend
    once got the web server's port, and answered its readiness check)."""
    from progrock.local.stack import _hold_free_port

    with contextlib.ExitStack() as held:
        ports = [_hold_free_port(held) for _ in range(50)]
        assert len(set(ports)) == 50
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", ports[0]))  # still held
    with socket.socket() as other:
        other.bind(("127.0.0.1", ports[0]))  # given back


def test_django_children_get_the_stacks_database_url_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """database_url reaches the Django processes as DATABASE_URL; without one, a
    DATABASE_URL of the calling process does not leak in (the project's default)."""
    monkeypatch.setenv("DATABASE_URL", "postgres://someone@elsewhere/theirs")
    given = Stack(data_dir=tmp_path, database_url="postgres://rock@127.0.0.1:5999/stack")
    default = Stack(data_dir=tmp_path)
    try:
        assert given._env(django=True)["DATABASE_URL"] == "postgres://rock@127.0.0.1:5999/stack"
        assert "DATABASE_URL" not in default._env(django=True)
    finally:
        given.stop()
        default.stop()


def test_up_celery_runs_a_worker_of_the_project_s_app() -> None:
    """--celery: a Celery worker of the settings' package, threads pool unless named."""
    from progrock.local.celery_worker import celery_command

    assert parse().celery is None
    assert parse("--celery").celery == "threads"
    assert parse("--celery", "prefork").celery == "prefork"
    argv = celery_command("python", "mysite.settings", "threads")
    assert argv[:6] == ["python", "-m", "celery", "-A", "mysite", "worker"]
    assert argv[argv.index("--pool") + 1] == "threads"
    with pytest.raises(ValueError, match="must be one of prefork, threads, solo, got 'gevent'"):
        celery_command("python", "mysite.settings", "gevent")
