"""Start a private, throwaway PostgreSQL server (a cluster of its own) for the tests.

``initdb`` makes a cluster in a temporary folder (trust authentication, one
superuser role ``progrock``) and ``postgres`` serves it on a free port of
127.0.0.1, with its Unix socket inside that folder: never the machine's own
server, never its port 5432. Given another ``host`` (an address inside a
network namespace of the several-hosts test), it listens there and trusts
the hosts of that address's subnet (``samenet``): a private network only.
The server runs as a child process in the foreground, like
:class:`~progrock.local.redis_server.RedisServer`, so stopping (or losing)
its owner leaves no daemon behind.

PostgreSQL refuses to run as root: when this process is root, the cluster is
made and served as the ``postgres`` system user (or ``nobody``), which then
owns the folder. Durability is traded for speed (``fsync`` off): the data is
thrown away with the folder.

The binaries come from ``$PROGROCK_POSTGRES_BINDIR``, ``pg_config --bindir``,
the folder of an ``initdb`` on ``PATH``, or the usual package locations
(``/usr/lib/postgresql/*/bin`` and others); :func:`find_postgres_bindir`
raises, naming what it tried, when there are none.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from progrock.exceptions import ProgRockError
from progrock.local.redis_server import free_port, is_loopback

__all__ = ["PostgresServer", "find_postgres_bindir"]

SUPERUSER = "progrock"
_NEEDED = ("initdb", "postgres")
# Where distributions put the server binaries (Debian/Ubuntu, RHEL's PGDG, Homebrew).
_PACKAGE_GLOBS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
)
# Users a root process runs the server as, in order of preference.
_SERVER_USERS = ("postgres", "nobody")


def _has_binaries(folder: str | Path) -> bool:
    return all(os.access(Path(folder) / name, os.X_OK) for name in _NEEDED)


def _version_key(folder: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", folder))


def find_postgres_bindir() -> Path:
    """The folder holding ``initdb`` and ``postgres``, or raise naming what was tried."""
    explicit = os.environ.get("PROGROCK_POSTGRES_BINDIR")
    if explicit:
        if not _has_binaries(explicit):
            raise ProgRockError(
                f"PROGROCK_POSTGRES_BINDIR must be a folder with initdb and postgres, "
                f"got {explicit!r}"
            )
        return Path(explicit)
    tried: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_binaries(out):
            return Path(out)
        tried.append(f"pg_config --bindir ({out or 'failed'})")
    else:
        tried.append("pg_config (not on PATH)")
    initdb = shutil.which("initdb")
    if initdb:
        folder = Path(initdb).resolve().parent
        if _has_binaries(folder):
            return folder
        tried.append(f"{folder} (initdb on PATH, no postgres beside it)")
    else:
        tried.append("initdb (not on PATH)")
    for pattern in _PACKAGE_GLOBS:
        for found in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            if _has_binaries(found):
                return Path(found)
        tried.append(pattern)
    raise ProgRockError(
        "no PostgreSQL server binaries (initdb, postgres) found; tried "
        + ", ".join(tried)
        + ": install PostgreSQL's server package or set PROGROCK_POSTGRES_BINDIR"
    )


def _server_user() -> pwd.struct_passwd | None:
    """The user to run as: None when this process is not root (run as itself)."""
    if os.geteuid() != 0:
        return None
    for name in _SERVER_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ProgRockError(
        "PostgreSQL refuses to run as root and none of the users "
        f"{', '.join(_SERVER_USERS)} exists to run it as"
    )


class PostgresServer:
    """A private PostgreSQL cluster, made, started and stopped by us.

    It listens on ``host`` (default 127.0.0.1); ``options`` are more server
    settings (``{"idle_in_transaction_session_timeout": "5s"}``).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        bindir: str | Path | None = None,
        host: str = "127.0.0.1",
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.options = dict(options or {})
        self.port = port or free_port(host)
        self.bindir = Path(bindir) if bindir is not None else find_postgres_bindir()
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="progrock-postgres-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """URL of the cluster's ``postgres`` database, as the superuser."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgres://{SUPERUSER}@{host}:{self.port}/{database}"

    def _as_server_user(self) -> dict[str, Any]:
        """Popen arguments that run a command as the server's user, in its folder."""
        options: dict[str, Any] = {"cwd": str(self.root), "env": {**os.environ, "LC_ALL": "C"}}
        if self.user is not None:
            options.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        return options

    def start(self, timeout: float = 60.0) -> None:
        """Make the cluster (first time) and start the server; wait until it accepts queries."""
        self.socket_dir.mkdir(exist_ok=True)
        if self.user is not None:
            for path in (self.root, self.socket_dir):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if not is_loopback(self.host):
            self._trust_subnet()
        command = [
            str(self.bindir / "postgres"),
            *("-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.socket_dir)),
            *("-c", f"listen_addresses={self.host}"),
            # A throwaway cluster: no waiting on the disk.
            *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            *("-c", "max_connections=200", "-c", "log_min_messages=warning"),
            *(arg for name, value in self.options.items() for arg in ("-c", f"{name}={value}")),
        ]
        log = (self.root / "server.log").open("ab")
        try:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, **self._as_server_user()
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProgRockError(
                    f"postgres exited with {self.process.returncode}: {self._log_tail()}"
                )
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise ProgRockError(f"postgres was not ready on port {self.port} within {timeout:g} s")

    def _initdb(self) -> None:
        command = [
            str(self.bindir / "initdb"),
            *("-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust"),
            *("--encoding=UTF8", "--locale=C", "--no-sync"),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, **self._as_server_user()
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise ProgRockError(
                f"initdb exited with {done.returncode}: {lines[-1] if lines else 'no output'}"
            )

    def _trust_subnet(self) -> None:
        """Let the hosts of the listening address's subnet in (initdb trusts loopback only)."""
        hba = self.data_dir / "pg_hba.conf"
        line = "host all all samenet trust\n"
        text = hba.read_text()
        if line not in text:
            hba.write_text(text + line)

    def ready(self) -> bool:
        """Whether the server says it is ready (its ``postmaster.pid`` status line)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        # Line 8 is the postmaster's status ("starting", "ready", ...) since PostgreSQL 10.
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def _log_tail(self) -> str:
        try:
            lines = (self.root / "server.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:]) or "no log"

    def stop(self) -> None:
        """Stop the server: fast shutdown (SIGINT), then immediate, then kill."""
        process = self.process
        self.process = None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            process.send_signal(sig)
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def cleanup(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
