"""Never silent, over real processes: a missing worker or delay server is reported by
``progrock_status`` within seconds, and starts are refused naming it (socket and HTTP API)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from progrock.heartbeat import TTL
from progrock.local.stack import Stack
from progrock.web.liveness import CONFIRM_AFTER, FRESH_FOR
from tests.e2e.conftest import MakeStack
from tests.e2e.wsclient import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FAST = {"kind": "rock", "params": {"interval_ms": 20}}
# A killed process's last beat counts for TTL seconds; the web trusts a healthy
# reading for FRESH_FOR more and confirms a missing kind over CONFIRM_AFTER; the
# rest is slack for a loaded machine.
NOTICED_WITHIN = TTL + FRESH_FOR + CONFIRM_AFTER + 8.0


def status(stack: Stack, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run ``manage.py progrock_status --json`` against the stack's Redis."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "progrock_demo.settings",
        "REDIS_URL": stack.redis_url,
        "PROGROCK_DATA_DIR": str(stack.data_dir),
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "progrock_status", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout), done.stderr


def until_status(stack: Stack, code: int, *args: str) -> tuple[dict[str, Any], float]:
    """Poll progrock_status until it exits ``code``; its report and how long that took."""
    began = time.monotonic()
    while True:
        got, report, err = status(stack, *args)
        if got == code:
            return report, time.monotonic() - began
        assert time.monotonic() - began < NOTICED_WITHIN, (got, report, err)
        time.sleep(0.5)


async def refused_start(client: Client) -> dict[str, Any]:
    """Start until a start is refused (the web notices within seconds); the refusal.

    A start accepted before that gets no answer (no worker takes it, or no delay
    server times it): the next is sent after a second.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NOTICED_WITHIN
    while True:
        await client.send({"action": "start", **FAST, "ref": "r"})
        try:
            return await client.recv_type("error", timeout=1.0)
        except TimeoutError:
            assert loop.time() < deadline, "starts were still accepted"


def http_start(stack: Stack) -> tuple[int, dict[str, Any]]:
    """POST a start to the HTTP API like a page would: session and CSRF cookie, token header."""
    with urllib.request.urlopen(stack.url + "/bars/", timeout=10) as response:
        cookies = dict(
            re.match(r"([^=]+)=([^;]*)", c).groups()  # type: ignore[union-attr]
            for c in response.headers.get_all("Set-Cookie") or []
        )
    request = urllib.request.Request(
        stack.url + "/prog/api/tasks/",
        data=json.dumps(FAST).encode(),
        headers={
            "Content-Type": "application/json",
            "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
            "X-CSRFToken": cookies["csrftoken"],
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_a_killed_delay_server_is_reported_and_starts_are_refused(
    make_stack: MakeStack,
) -> None:
    """Every kind beats (status exits 0); with the delay server killed, status exits 1
    naming it within seconds and a socket's start gets `unavailable` naming it; once it
    is back, starts work again."""
    stack = make_stack()
    client = await Client.connect(stack.url)  # the web process beats from its first socket
    report, _ = await asyncio.to_thread(until_status, stack, 0, "--require", "web,worker,delay")
    kinds = sorted(p["kind"] for p in report["processes"])
    assert kinds == ["delay", "web", "worker", "worker"], report
    assert all(p["last_beat_s"] < TTL for p in report["processes"]), report

    await asyncio.to_thread(stack.kill, "delay")
    report, _ = await asyncio.to_thread(until_status, stack, 1)
    assert report["missing"] == ["delay"], report
    assert report["messages"] == ["no delay server is running (start `manage.py rundelay`)"]
    refusal = await refused_start(client)
    assert refusal["code"] == "unavailable" and refusal["ref"] == "r", refusal
    assert "no delay server is running (start `manage.py rundelay`)" in refusal["detail"]

    await asyncio.to_thread(stack.restart, "delay")
    # The restarted server beat before its ready line; the web looks again within 0.25 s.
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        await client.send({"action": "start", **FAST, "ref": "again"})
        answer = await client.recv_type("started", "error")
        if answer["type"] == "started" and answer.get("ref") == "again":
            break
        assert asyncio.get_running_loop().time() < deadline, answer
        await asyncio.sleep(0.3)
    final = await client.until_terminal(answer["task_id"], timeout=60)
    assert final["type"] == "complete", final
    await client.close()


async def test_with_no_worker_starts_are_refused_on_the_socket_and_the_http_api(
    make_stack: MakeStack,
) -> None:
    """The only worker killed: the socket's start gets an `unavailable` error frame and
    the HTTP API a 503, both naming the worker and the command that runs it."""
    stack = make_stack(workers=1)
    client = await Client.connect(stack.url)
    await asyncio.to_thread(stack.kill, "worker-1")
    refusal = await refused_start(client)
    assert refusal["code"] == "unavailable", refusal
    assert refusal["detail"] == "no worker process is running (start `manage.py runprogrock`)"
    code, body = await asyncio.to_thread(http_start, stack)
    assert code == 503, body
    assert body == {
        "type": "error",
        "code": "unavailable",
        "detail": "no worker process is running (start `manage.py runprogrock`)",
        "action": "start",
    }
    assert any("no worker process is running" in line for line in stack.output("web")), (
        "the web process logged no warning"
    )
    await client.close()
