"""``manage.py progrock_status`` on a real Redis: lists live processes, exit codes, --json."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import redis
from django.core.management import CommandError, call_command
from django.test import override_settings

from progrock.heartbeat import Identity, beat_sync
from progrock.local.redis_server import free_port

pytestmark = pytest.mark.redis


@pytest.fixture
def wired(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    with override_settings(PROGROCK={"REDIS_URL": redis_url}):
        yield client
    client.close()


def status(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("progrock_status", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_all_kinds_live_exits_0_and_lists_each_process(wired: redis.Redis) -> None:
    """A worker, a delay server and a web process beat: exit 0, one line each."""
    for kind, pid in (("worker", 11), ("delay", 12), ("web", 13)):
        beat_sync(wired, "progrock:", Identity(kind, host="box", pid=pid))
    code, out, err = status()
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["worker", "delay", "web"]
    assert "box:11" in lines[0] and "box:12" in lines[1] and "box:13" in lines[2]
    assert err == ""


def test_a_missing_delay_server_exits_1_naming_it(wired: redis.Redis) -> None:
    """Only a worker beats: exit 1, and stderr says how to start the delay server."""
    beat_sync(wired, "progrock:", Identity("worker"))
    code, out, err = status()
    assert code == 1
    assert "delay   none live\n" in out
    # A running web process beats from its first socket: the line says so.
    assert "web     none live (a web process shows here from its first socket on)" in out
    assert err.strip() == "no delay server is running (start `manage.py rundelay`)"


def test_json_reports_processes_and_what_is_missing(wired: redis.Redis) -> None:
    """--json: one object with ok, missing, messages and every live process's figures."""
    beat_sync(wired, "progrock:", Identity("delay", host="d", pid=5))
    code, out, _ = status("--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["missing"] == ["worker"] and "runprogrock" in report["messages"][0]
    [process] = report["processes"]
    assert (process["kind"], process["host"], process["pid"]) == ("delay", "d", 5)
    assert process["age_s"] >= 0 and process["last_beat_s"] >= 0


def test_require_web_counts_web_processes(wired: redis.Redis) -> None:
    """--require web,worker,delay makes a missing web process an error too."""
    beat_sync(wired, "progrock:", Identity("worker"))
    beat_sync(wired, "progrock:", Identity("delay"))
    assert status()[0] == 0
    code, _, err = status("--require", "web,worker,delay")
    assert code == 1 and "no web process is running" in err


def test_a_wrong_require_value_is_a_usage_error(wired: redis.Redis) -> None:
    """--require names the kinds it accepts and quotes the bad value."""
    with pytest.raises(CommandError, match="must be a comma-separated list of worker, delay, web"):
        call_command("progrock_status", "--require", "workers")


def test_an_unreachable_redis_exits_2_naming_it() -> None:
    """Redis refusing connections: exit status 2, and the message says where it looked."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with (
        override_settings(PROGROCK={"REDIS_URL": dead}),
        pytest.raises(CommandError, match="cannot read the heartbeats from Redis at") as caught,
    ):
        call_command("progrock_status")
    assert caught.value.returncode == 2


def test_this_host_counts_only_this_hosts_processes(wired: redis.Redis) -> None:
    """--this-host: a worker on another host does not make this container ready."""
    import socket

    beat_sync(wired, "progrock:", Identity("worker", host="elsewhere", pid=3))
    assert status("--require", "worker")[0] == 0
    code, out, err = status("--require", "worker", "--this-host")
    assert code == 1 and "elsewhere" not in out and "no worker process" in err
    beat_sync(wired, "progrock:", Identity("worker", host=socket.gethostname(), pid=4))
    assert status("--require", "worker", "--this-host")[0] == 0
