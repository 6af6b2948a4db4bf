"""``progrock up`` as a real subprocess: its output collected, its descendants tracked.

Shared by the ``progrock up`` tests and the wheel test (which runs the
``progrock`` script of a fresh virtual environment).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil
import pytest

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
    """``progrock up`` as a real subprocess in its own session, its output collected.

    ``command``: the ``progrock`` script to run (default: this environment's);
    ``env``: its whole environment (default: this one's without ``REDIS_URL``,
    so it starts its own Redis).
    """

    def __init__(
        self,
        *args: str,
        cwd: Path,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if env is None:
            env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.proc = subprocess.Popen(
            [*(command or progrock_command()), "up", *args],
            cwd=cwd,
            env=dict(env),
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
