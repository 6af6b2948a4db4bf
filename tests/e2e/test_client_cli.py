"""``progrock run`` and ``progrock watch`` as real subprocesses against the real stack."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from progrock.local.redis_server import free_port
from progrock.local.stack import Stack
from tests.e2e.stackusers import user_with_token
from tests.e2e.taskrows import select, stored_id

pytestmark = pytest.mark.e2e

WATCH_LINE = re.compile(r"(progrock watch (\S+) --session (\S+) --url (\S+))")
# A task that runs long enough to be interrupted: 1 % every 200 ms.
SLOW = ["--param", "step=1", "--param", "interval_ms=200"]


def progrock_argv() -> list[str]:
    """The installed console script next to this Python, else ``python -m progrock.cli``."""
    script = Path(sys.executable).with_name("progrock")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "progrock.cli"]


class Client:
    """A ``progrock`` subprocess whose output is read by threads as it comes.

    Output is kept as raw text, so a prompt without a newline is visible too.
    """

    def __init__(self, *args: str, stdin: Any = subprocess.DEVNULL) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROGROCK_")}
        env["COLUMNS"] = "100"
        self.process = subprocess.Popen(
            [*progrock_argv(), *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self._text = {"out": "", "err": ""}
        self._changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.process.stdout, "out"), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, "err"), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: Any, name: str) -> None:
        fd = stream.fileno()
        while chunk := os.read(fd, 65536):
            with self._changed:
                self._text[name] += chunk.decode("utf-8", "replace")
                self._changed.notify_all()

    @property
    def stdout(self) -> str:
        return self._text["out"]

    @property
    def stderr(self) -> str:
        return self._text["err"]

    @property
    def out(self) -> list[str]:
        return self.stdout.splitlines()

    def wait_err(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait for stderr to match ``pattern``."""
        return self._wait("err", pattern, timeout)

    def wait_out(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait for stdout to match ``pattern``."""
        return self._wait("out", pattern, timeout)

    def _wait(self, name: str, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for output matching ``pattern``; fail naming it on timeout or exit."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search(self._text[name])
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    pytest.fail(
                        f"no output matching {pattern!r}; stdout: {self.stdout!r}; "
                        f"stderr: {self.stderr!r}"
                    )
                self._changed.wait(min(left, 0.2))

    def finish(self, timeout: float = 30.0) -> int:
        """Wait for the exit code and for all output."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"progrock did not exit in {timeout} s; stdout {self.stdout!r} "
                f"stderr {self.stderr!r}"
            )
        for thread in self._threads:
            thread.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for thread in self._threads:
            thread.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Started clients, always reaped."""
    started: list[Client] = []
    yield started
    for client in started:
        client.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole ProgRock stack on free ports, shared by this module."""
    data_dir = tmp_path_factory.mktemp("stack")
    with Stack(port=0, workers=2, data_dir=data_dir, env={"PROGROCK_POLL_INTERVAL": "0.1"}) as s:
        yield s


def start(clients: list[Client], *args: str, stdin: Any = subprocess.DEVNULL) -> Client:
    client = Client(*args, stdin=stdin)
    clients.append(client)
    return client


def json_lines(client: Client) -> list[dict[str, Any]]:
    """Every stdout line, each of which must be one JSON object."""
    messages = [json.loads(line) for line in client.out]
    assert all(isinstance(m, dict) for m in messages), client.out
    return messages


def test_run_completes_with_exit_0_and_prints_the_result(
    stack: Stack, clients: list[Client]
) -> None:
    """A task that succeeds ends with exit 0, a ``complete:`` line and a watch line on stderr."""
    client = start(clients, "run", "rock", "--url", stack.url, "--param", "interval_ms=50")
    assert client.finish() == 0, client.stderr
    assert client.out[-1].startswith("complete: {"), client.out
    assert " 0.0%" in client.out[0]
    match = WATCH_LINE.search(client.stderr)
    assert match is not None, client.stderr
    assert match.group(4) == stack.url


def test_run_json_prints_every_message_and_ends_with_complete(
    stack: Stack, clients: list[Client]
) -> None:
    """--json prints only protocol messages, in seq order, the last one ``complete``."""
    client = start(
        clients, "run", "rock", "--url", stack.url, "--json", "--param", "interval_ms=50"
    )
    assert client.finish() == 0, client.stderr
    messages = json_lines(client)
    assert messages[0] == {"accept": True}
    task = [m for m in messages if "seq" in m]
    assert task[0]["type"] == "started"
    assert [m["seq"] for m in task] == sorted(m["seq"] for m in task)
    assert messages[-1]["type"] == "complete"
    assert messages[-1]["progress"] == 100
    assert messages[-1]["task_id"] == task[0]["task_id"]
    assert task[0]["task_id"] in client.stderr  # the id and watch line go to stderr


def test_failing_task_exits_1_and_prints_the_error(stack: Stack, clients: list[Client]) -> None:
    """A task failing at 30 % exits 1 with ``failed: <code>: <detail>``."""
    client = start(
        clients, "run", "rock", "--url", stack.url, "--param", "interval_ms=50", "--param",
        "fail_at=30",
    )  # fmt: skip
    assert client.finish() == 1, client.stderr
    assert client.out[-1].startswith("failed: backend_failed: "), client.out
    assert "30" in client.out[-1]


def test_task_rejected_by_the_backend_exits_1(stack: Stack, clients: list[Client]) -> None:
    """Params the backend refuses end the run with ``failed: backend_rejected`` and exit 1."""
    client = start(clients, "run", "rock", "--url", stack.url, "--param", "step=-1")
    assert client.finish() == 1, client.stderr
    assert client.out[-1].startswith("failed: backend_rejected: "), client.out
    assert "got -1" in client.out[-1]


def test_error_frame_exits_3_naming_code_and_detail(stack: Stack, clients: list[Client]) -> None:
    """Starting an unknown kind exits 3 and prints the server's error code and detail."""
    client = start(clients, "run", "no-such-kind", "--url", stack.url)
    assert client.finish() == 3
    assert "unknown_kind" in client.stderr
    assert "'no-such-kind'" in client.stderr
    assert client.out == []


def test_second_process_watches_with_the_printed_session(
    stack: Stack, clients: list[Client]
) -> None:
    """``watch`` with the printed session follows the task to the end; without it, forbidden."""
    runner = start(clients, "run", "rock", "--url", stack.url, "--param", "interval_ms=60")
    match = runner.wait_err(WATCH_LINE.pattern)
    task_id, session = match.group(2), match.group(3)
    watcher = start(clients, "watch", task_id, "--session", session, "--url", stack.url, "--json")
    stranger = start(clients, "watch", task_id, "--url", stack.url)
    assert stranger.finish() == 3
    assert "forbidden" in stranger.stderr
    assert runner.finish() == 0, runner.stderr
    assert watcher.finish() == 0, watcher.stderr
    messages = json_lines(watcher)
    task = [m for m in messages if m.get("task_id") == task_id]
    assert task[0]["type"] == "snapshot"
    assert messages[-1]["type"] == "complete"

    again = start(clients, "watch", task_id, "--session", session, "--url", stack.url, "--json")
    assert again.finish() == 0, again.stderr
    types = [m.get("type") for m in json_lines(again)]
    assert types[-2:] == ["snapshot", "complete"]


def test_sigint_without_a_tty_cancels_the_task_and_exits_2(
    stack: Stack, clients: list[Client]
) -> None:
    """Ctrl-C with stdin not a TTY sends ``cancel``; the run ends ``cancelled`` with exit 2."""
    client = start(clients, "run", "rock", "--url", stack.url, *SLOW)
    client.wait_err(WATCH_LINE.pattern)
    client.process.send_signal(signal.SIGINT)
    assert client.finish() == 2, client.stderr
    assert client.out[-1] == "cancelled"
    assert "cancelling task" in client.stderr


def test_sigint_with_a_tty_asks_and_cancels_on_yes(stack: Stack, clients: list[Client]) -> None:
    """Ctrl-C with a TTY on stdin asks first; ``y`` cancels (exit 2)."""
    master, slave = pty.openpty()
    try:
        client = start(clients, "run", "rock", "--url", stack.url, *SLOW, stdin=slave)
        client.wait_err(WATCH_LINE.pattern)
        client.process.send_signal(signal.SIGINT)
        client.wait_err(r"Cancel task \S+ on the server\? \[y/N\]")
        os.write(master, b"y\n")
        assert client.finish() == 2, client.stderr
        assert client.out[-1] == "cancelled"
    finally:
        os.close(master)
        os.close(slave)


def test_sigint_with_a_tty_answered_no_disconnects_with_130(
    stack: Stack, clients: list[Client]
) -> None:
    """Answering no leaves the task running and exits 130 with a watch line to resume."""
    master, slave = pty.openpty()
    try:
        client = start(clients, "run", "rock", "--url", stack.url, *SLOW, stdin=slave)
        match = client.wait_err(WATCH_LINE.pattern)
        client.process.send_signal(signal.SIGINT)
        client.wait_err(r"Cancel task")
        os.write(master, b"n\n")
        assert client.finish() == 130, client.stderr
        assert "keeps running" in client.stderr
    finally:
        os.close(master)
        os.close(slave)
    task_id, session = match.group(2), match.group(3)
    watcher = start(clients, "watch", task_id, "--session", session, "--url", stack.url, "--json")
    watcher.wait_out(r'"type":"snapshot"')  # the task still runs on the server
    watcher.process.send_signal(signal.SIGINT)  # non-tty: cancel it so the stack stays idle
    assert watcher.finish() == 2, watcher.stderr
    statuses = [m.get("status") for m in json_lines(watcher) if m.get("type") == "snapshot"]
    assert statuses and statuses[0] == "running"


def test_unreachable_server_exits_3_with_a_clear_message(clients: list[Client]) -> None:
    """Nothing listening on the URL: exit 3 and a message naming the address."""
    url = f"http://127.0.0.1:{free_port()}"
    client = start(clients, "run", "rock", "--url", url)
    assert client.finish() == 3
    assert f"cannot reach {url}/" in client.stderr
    watcher = start(clients, "watch", "6f9619ff-8b86-d011-b42d-00c04fc964ff", "--url", url)
    assert watcher.finish() == 3
    assert "cannot connect to ws://127.0.0.1:" in watcher.stderr


def test_client_reconnects_and_resubscribes_after_the_web_process_restarts(
    stack: Stack, clients: list[Client]
) -> None:
    """When the web process restarts mid-task (closing with 1012), the client says so,
    reconnects, gets a snapshot, ends 0."""
    client = start(
        clients, "run", "rock", "--url", stack.url, "--json", "--param", "step=3", "--param",
        "interval_ms=200", "--reconnect-attempts", "12",
    )  # fmt: skip
    client.wait_err(WATCH_LINE.pattern)
    stack.restart("web")
    client.wait_err(r"reconnecting in")
    assert client.finish(timeout=60) == 0, client.stderr
    assert "connection lost (the server is restarting: code 1012)" in client.stderr
    messages = json_lines(client)
    assert "snapshot" in [m.get("type") for m in messages]
    assert messages[-1]["type"] == "complete"


def test_run_and_watch_with_a_token_act_for_its_user(stack: Stack, clients: list[Client]) -> None:
    """--token: the task belongs to the token's user (no session is fetched), the watch
    line asks for --token (never printing it), and watch --token follows the task."""
    pk, token = user_with_token(stack, "cli-token-user")
    run = start(
        clients, "run", "rock", "--url", stack.url, "--token", token, "--param", "interval_ms=50"
    )
    assert run.finish() == 0, run.stderr
    match = re.search(r"progrock watch (\S+) --url \S+ --token TOKEN", run.stderr)
    assert match is not None and token not in run.stderr, run.stderr
    task_id = match.group(1)
    owner = select(
        stack, "SELECT owner FROM progrock_task WHERE id = %s", stored_id(stack, task_id)
    )
    assert owner == [(f"user:{pk}",)]
    watch = start(clients, "watch", task_id, "--url", stack.url, "--token", token)
    assert watch.finish() == 0, watch.stderr
    assert watch.out[-1].startswith("complete: {"), watch.out


def test_a_refused_token_exits_3_saying_why(stack: Stack, clients: list[Client]) -> None:
    """An unknown token: exit 3 with the server's reason, and nothing started."""
    client = start(clients, "run", "rock", "--url", stack.url, "--token", "made-up")
    assert client.finish() == 3, client.stderr
    assert "unauthenticated: token refused: not a signed token of this server" in client.stderr
    assert "started" not in client.stderr
