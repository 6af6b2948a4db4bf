"""``progrock up`` and :class:`~progrock.local.stack.Stack` with the real processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from progrock.local.stack import Stack

pytestmark = pytest.mark.e2e

UP_LINE = re.compile(r"ProgRock is up: (http://\S+?)/?$")
STARTUP = 90.0


def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until ``condition()`` is true, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def progrock_command() -> list[str]:
    script = Path(sys.executable).with_name("progrock")
    return [str(script)] if script.exists() else [sys.executable, "-m", "progrock.cli"]


class Up:
    """``progrock up`` as a real subprocess in its own session, its output collected."""

    def __init__(self, *args: str, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.proc = subprocess.Popen(
            [*progrock_command(), "up", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self.seen: dict[int, psutil.Process] = {}  # every descendant ever observed
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        try:
            parent = psutil.Process(self.proc.pid)
            while self.proc.poll() is None:
                for child in parent.children(recursive=True):
                    self.seen.setdefault(child.pid, child)
                time.sleep(0.05)
        except psutil.NoSuchProcess:
            pass

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = UP_LINE.search(line)
            if match:
                self.url = match.group(1)

    def text(self) -> str:
        return "\n".join(self.lines[-60:])

    def wait_up(self) -> str:
        deadline = time.monotonic() + STARTUP
        while self.url is None:
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"progrock up exited with {self.proc.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"progrock up not up after {STARTUP} s:\n{self.text()}")
            time.sleep(0.05)
        return self.url

    def descendants(self) -> list[psutil.Process]:
        return list(psutil.Process(self.proc.pid).children(recursive=True))

    def wait_exit(self, timeout: float = 40.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"progrock up still running {timeout} s after the signal:\n{self.text()}")
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            for child in self.descendants():
                child.kill()
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def run_up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    """Factory: start ``progrock up ARGS`` from a directory unrelated to the source tree."""
    started: list[Up] = []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> Up:
        up = Up(*args, cwd=elsewhere)
        started.append(up)
        return up

    yield run
    for up in started:
        up.close()
    assert list(elsewhere.iterdir()) == [], "progrock up wrote into its working directory"


def assert_all_gone(processes: list[psutil.Process], output: str) -> None:
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}\n{output}"


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        status: int = response.status
        return status


def stop_and_check(up: Up, send: Callable[[], None]) -> None:
    children = up.descendants()
    names = " ".join(" ".join(p.cmdline()) for p in children)
    for part in ("redis-server", "progrock.local.backend", "rundelay", "runprogrock", "daphne"):
        assert part in names, f"no {part} among the children of progrock up: {names}"
    send()
    assert up.wait_exit() == 0, up.text()
    assert_all_gone([*children, *up.seen.values()], up.text())


def test_up_serves_the_page_and_stops_everything_on_sigterm(
    run_up: Callable[..., Up], tmp_path: Path
) -> None:
    """`progrock up` runs the stack, serves /, and on SIGTERM stops every child and exits 0."""
    data = tmp_path / "data"
    up = run_up("--port", "0", "--data-dir", str(data))
    url = up.wait_up()
    assert get(url + "/") == 200
    assert (data / "db.sqlite3").exists()
    assert (data / "redis").is_dir()
    stop_and_check(up, lambda: os.kill(up.proc.pid, signal.SIGTERM))
    assert "progrock | stopped" in up.text()


def test_ctrl_c_in_a_terminal_stops_everything_once(
    run_up: Callable[..., Up], tmp_path: Path
) -> None:
    """SIGINT to the whole foreground process group (Ctrl-C) stops every child and exits 0."""
    up = run_up("--port", "0", "--data-dir", str(tmp_path / "data"), "--workers", "1")
    up.wait_up()
    stop_and_check(up, lambda: os.killpg(up.proc.pid, signal.SIGINT))
    assert up.text().count("SIGINT: stopping") == 1, up.text()
    assert "killing" not in up.text(), up.text()


def test_sigterm_during_startup_leaves_no_child(run_up: Callable[..., Up], tmp_path: Path) -> None:
    """SIGTERM while `progrock up` is still starting stops what it started and exits 0."""
    up = run_up("--port", "0", "--data-dir", str(tmp_path / "data"))
    until(lambda: any(line.startswith("migrate ") for line in up.lines), STARTUP, "migrate")
    os.kill(up.proc.pid, signal.SIGTERM)
    assert up.wait_exit() == 0, up.text()
    assert up.seen, "no child was observed before the signal"
    assert_all_gone(list(up.seen.values()), up.text())


def test_up_refuses_a_port_in_use(run_up: Callable[..., Up], tmp_path: Path) -> None:
    """A busy --port fails startup at once, non-zero, naming the port, leaving nothing behind."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = run_up("--port", str(port), "--data-dir", str(tmp_path / "data"))
        assert up.wait_exit() != 0
    assert f"cannot listen on 127.0.0.1:{port}" in up.text(), up.text()


def test_a_crashed_worker_is_restarted(make_stack: Callable[..., Stack]) -> None:
    """A worker that dies unexpectedly is started again and the supervisor logs it."""
    stack = make_stack(workers=1)
    old = stack.pids()["worker-1"]
    os.kill(old, signal.SIGKILL)
    until(lambda: stack.pids().get("worker-1", old) != old, 30, "a new worker-1")
    assert any("restarting worker-1" in line for line in stack.output("progrock"))


def test_killed_through_the_api_stays_down_until_restart(
    make_stack: Callable[..., Stack],
) -> None:
    """Stack.kill() keeps a child down; Stack.restart() brings it back ready."""
    stack = make_stack(workers=1)
    old = stack.pids()["delay"]
    stack.kill("delay")
    until(lambda: not psutil.pid_exists(old) or _zombie(old), 10, "delay to die")
    assert "delay" not in stack.pids()
    stack.restart("delay")
    assert stack.pids()["delay"] != old
    stack.restart("web")
    assert get(stack.url + "/") == 200


def test_redis_data_survives_a_restart_of_the_stack(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """The private Redis persists to the data dir, so a new stack there sees the old keys."""
    data = tmp_path / "data"
    first = make_stack(data_dir=data, workers=1)
    client = redis.Redis.from_url(first.redis_url)
    client.zadd("progrock:e2e-survivor", {"member": 1.0})
    client.close()
    first.stop()
    second = make_stack(data_dir=data, workers=1)
    client = redis.Redis.from_url(second.redis_url)
    try:
        assert client.zscore("progrock:e2e-survivor", "member") == 1.0
    finally:
        client.close()


def test_several_web_processes_serve_the_site(make_stack: Callable[..., Stack]) -> None:
    """web_processes=2 runs two daphne processes on their own ports, both serving /."""
    stack = make_stack(workers=1, web_processes=2)
    assert len(stack.urls) == 2 and stack.urls[0] == stack.url
    assert {"web-1", "web-2"} <= set(stack.pids())
    for url in stack.urls:
        assert get(url + "/") == 200


def test_a_stack_can_use_an_existing_redis_and_backend(
    stack: Stack, make_stack: Callable[..., Stack]
) -> None:
    """Given redis_url and backend_url, a stack starts neither and passes them on."""
    second = make_stack(workers=1, redis_url=stack.redis_url, backend_url=stack.backend_url)
    assert "redis" not in second.pids() and "backend" not in second.pids()
    assert (second.redis_url, second.backend_url) == (stack.redis_url, stack.backend_url)
    assert get(second.url + "/") == 200


def test_shared_stack_urls(stack: Stack) -> None:
    """The shared stack exposes its web, WebSocket, Redis and backend addresses."""
    assert stack.ws_url == stack.url.replace("http://", "ws://") + "/prog/"
    assert stack.redis_url.startswith("redis://127.0.0.1:")
    assert stack.backend_url.startswith("http://127.0.0.1:")
    assert get(stack.url + "/") == 200


def _zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
