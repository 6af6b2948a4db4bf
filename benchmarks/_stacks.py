"""Start the two stacks under test on 127.0.0.1, each with its own private Redis.

* ``baseline``: the 2017 design ported to Channels 4 (``benchmarks/baseline``): Daphne,
  two ``runworker prog-rocker`` processes, the literal delay server.
* ``progrock``: the project's own supervisor, ``progrock up`` (which runs the
  backend service, the delay server, the workers and the web server).

Each starter returns a :class:`Stack` whose ``children`` are the processes whose
CPU and memory count, and which the caller must ``stop()``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _client import probe
from _procs import Child, spawn, wait_until

from progrock.local.redis_server import RedisServer, free_port

HERE = Path(__file__).resolve().parent
BASELINE_DIR = HERE / "baseline"
PYTHON = sys.executable
TARGETS = ("progrock", "baseline")


@dataclass
class Stack:
    """A running stack: its WebSocket URL, its processes, its Redis."""

    name: str
    url: str
    redis: RedisServer
    urls: list[str] = field(default_factory=list)  # every web process (url is the first)
    backend_url: str | None = None  # the reference backend, where the stack runs one
    children: list[Child] = field(default_factory=list)
    workdir: Path | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def roots(self) -> dict[str, int]:
        """Role -> pid of every process whose CPU and memory count (Redis included)."""
        roots = {child.role: child.pid for child in self.children}
        if self.redis.process is not None:
            roots["redis"] = self.redis.process.pid
        return roots

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise RuntimeError(
                    f"{self.name}: {child.role} exited with {child.popen.returncode}:\n"
                    f"{child.log_tail()}"
                )

    def logs(self) -> str:
        return "\n".join(f"--- {c.role} ---\n{c.log_tail()}" for c in self.children)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.redis.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _new_stack(name: str, keep_logs: Path | None) -> tuple[Stack, Path]:
    tmp = None
    if keep_logs is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
        workdir = Path(tmp.name)
    else:
        workdir = keep_logs
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
    redis = RedisServer(data_dir=workdir / "redis")
    stack = Stack(name=name, url="", redis=redis, workdir=workdir, _tmp=tmp)
    return stack, workdir


def _wait_ready(stack: Stack, timeout: float) -> None:
    """Wait until a probe task gets two updates through web, worker and delay server."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            asyncio.run(
                probe(stack.url, stack.name, timeout=min(10.0, deadline - time.monotonic()))
            )
            return
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            last = exc
        except Exception as exc:  # websockets' handshake errors
            last = exc
        time.sleep(0.2)
    raise TimeoutError(
        f"{stack.name} not ready after {timeout:.0f}s (last error: {last!r})\n{stack.logs()}"
    )


def start_baseline(workers: int = 2, keep_logs: Path | None = None, timeout: float = 60) -> Stack:
    """Start the 2017 design's stack: Redis, Daphne, ``workers`` runworkers, the delay server."""
    stack, workdir = _new_stack("baseline", keep_logs)
    try:
        stack.redis.start()
        port = free_port()
        stack.url = f"ws://127.0.0.1:{port}/prog/"
        env = {
            "REDIS_URL": stack.redis.url,
            "DJANGO_SETTINGS_MODULE": "classicport.settings",
            "PYTHONPATH": str(BASELINE_DIR),
        }
        logs = workdir / "logs"
        stack.children.append(
            spawn(
                "web",
                [
                    PYTHON,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "classicport.asgi:application",
                ],
                logs,
                env=env,
                cwd=BASELINE_DIR,
            )
        )
        for i in range(workers):
            stack.children.append(
                spawn(
                    f"worker-{i + 1}",
                    [PYTHON, "-m", "django", "runworker", "prog-rocker"],
                    logs,
                    env=env,
                    cwd=BASELINE_DIR,
                )
            )
        stack.children.append(
            spawn("delay", [PYTHON, "manage.py", "rundelay"], logs, env=env, cwd=BASELINE_DIR)
        )
        _wait_ready(stack, timeout)
    except BaseException:
        stack.stop()
        raise
    return stack


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (``progrock up --web`` uses such)."""
    for _ in range(50):
        first = free_port()
        if first + count - 1 > 65535:
            continue
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"found no {count} consecutive free ports")


def start_progrock(
    workers: int = 2, keep_logs: Path | None = None, timeout: float = 90, web: int = 1
) -> Stack:
    """Start ProgRock the way a user does: ``progrock up``, which also runs the backend.

    Only Redis is ours (``REDIS_URL``), so every run starts from an empty one.
    This is the one place to adjust if ``progrock up``'s options change.
    """
    stack, workdir = _new_stack("progrock", keep_logs)
    try:
        stack.redis.start()
        port = _free_ports(web)
        stack.urls = [f"ws://127.0.0.1:{port + i}/prog/" for i in range(web)]
        stack.url = stack.urls[0]
        data_dir = workdir / "data"
        progrock = str(Path(PYTHON).with_name("progrock"))
        # BENCH_LOG_LEVEL=DEBUG (with --keep-logs) logs each poll and start batch's timings.
        level = os.environ.get("BENCH_LOG_LEVEL", "WARNING")
        env = {"REDIS_URL": stack.redis.url, "PROGROCK_LOG_LEVEL": level}
        argv = [progrock, "up", "--port", str(port), "--workers", str(workers), "--web", str(web)]
        argv += ["--data-dir", str(data_dir)]
        child = spawn("progrock", argv, workdir / "logs", env=env)
        stack.children.append(child)
        _wait_ready(stack, timeout)
        stack.backend_url = _backend_url(child, timeout=10)
    except BaseException:
        stack.stop()
        raise
    return stack


_BACKEND_LINE = re.compile(r"^\s*backend:\s*(http://\S+)", re.MULTILINE)


def _backend_url(child: Child, timeout: float) -> str:
    """The backend's URL, from the line ``progrock up`` prints once it is up."""
    found: list[str] = []

    def printed() -> bool:
        try:
            found[:] = _BACKEND_LINE.findall(child.log_path.read_text(errors="replace"))
        except OSError:
            return False
        return bool(found)

    try:
        wait_until(printed, timeout, "progrock up's 'backend: <url>' line")
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}; its output:\n{child.log_tail()}") from None
    return found[0].rstrip("/")


def start_stack(target: str, workers: int, keep_logs: Path | None = None, web: int = 1) -> Stack:
    if target == "baseline":
        return start_baseline(workers, keep_logs)
    if target == "progrock":
        return start_progrock(workers, keep_logs, web=web)
    raise ValueError(f"expected a target in {TARGETS}, got {target!r}")
