"""The whole ProgRock stack as supervised processes: ``progrock up`` and :class:`Stack`.

Start order: Redis (unless one is given), the backend task service and the
database migrations, then the delay server, the workers and the web server.
Stop order is the reverse. See :mod:`progrock.local.supervisor` for the mechanics.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from progrock.database_url import mask_password
from progrock.exceptions import ProgRockError
from progrock.local.celery_worker import POOLS as CELERY_POOLS
from progrock.local.celery_worker import READY_LINE as CELERY_READY
from progrock.local.celery_worker import celery_command
from progrock.local.datalock import DataDirInUse, DataDirLock
from progrock.local.preflight import SettingsNotImportable, check_settings, check_web_server
from progrock.local.redis_server import RedisServer
from progrock.local.supervisor import Aborted, ChildFailed, ChildSpec, Supervisor
from progrock.preflight import check_database_url, check_redis

__all__ = [
    "Aborted",
    "ChildFailed",
    "DataDirInUse",
    "SettingsNotImportable",
    "Stack",
    "add_up_parser",
    "default_data_dir",
    "run_up",
]

DEMO_SETTINGS = "progrock_demo.settings"
# The demo project lives in the source checkout's example/ folder, not in the wheel.
_CHECKOUT_EXAMPLE = Path(__file__).resolve().parents[3] / "example"
READY_TIMEOUT = 30.0
# Channels' runworker logs this line (INFO, "django" logger) just before it
# listens; if the logging setup hides it, a worker alive for 3 s counts as ready.
_WORKER_READINESS: dict[str, Any] = {
    "ready_line": re.compile(r"Running worker for channels"),
    "ready_after": 0.2,
    "ready_line_within": 3.0,
}
# A server bound to every address is reached through the loopback one.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_LOCAL_HOSTS = "127.0.0.1,localhost,[::1]"  # progrock_demo's default ALLOWED_HOSTS
_BACKEND = re.compile(r"listening on (https?://\S+)")
_DELAY = re.compile(r"rundelay ready")


WEB_SERVERS = ("daphne", "uvicorn")
# What the web processes serve: the project's application (named in the
# environment variable) plus static files, as runserver (progrock.local.devasgi;
# not imported here: it imports Django's handlers).
_DEV_APPLICATION = "progrock.local.devasgi:application"
_DEV_APPLICATION_ENV = "PROGROCK_UP_APPLICATION"
#: The backend's task file in the data dir (see progrock.local.backend.persist).
BACKEND_FILE = "backend.sqlite3"


def asgi_application(settings: str) -> str:
    """The ASGI application beside a settings module, as ``startproject`` lays it out:
    ``mysite.settings`` -> ``mysite.asgi:application``."""
    package = settings.rpartition(".")[0]
    return f"{package}.asgi:application" if package else "asgi:application"


def web_command(
    server: str,
    python: str,
    host: str,
    port: int,
    *,
    access_log: bool = False,
    application: str = asgi_application(DEMO_SETTINGS),
) -> list[str]:
    """The ASGI server command line of one web process.

    Without ``access_log`` no line per request and per WebSocket connect and
    disconnect reaches the output: at thousands of sockets that is noise, and
    the supervisor relayed every line of a burst of pages closing together.
    (Daphne has no switch for it: it still formats the lines, into
    ``/dev/null``; Uvicorn does not.) Daphne's other log lines stay.
    """
    if server == "uvicorn":
        return [
            python,
            "-m",
            "uvicorn",
            "--host",
            host,
            "--port",
            str(port),
            *([] if access_log else ["--no-access-log"]),
            "--ws",
            "websockets",
            "--lifespan",
            "off",
            application,
        ]
    quiet = [] if access_log else ["--access-log", os.devnull]
    return [python, "-m", "daphne", "-b", host, "-p", str(port), *quiet, application]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/progrock``, or ``~/.local/share/progrock``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "progrock"


def port_accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tcp_socket(host: str) -> socket.socket:
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)


def check_port_free(host: str, port: int) -> socket.socket:
    """Raise if ``host:port`` cannot be bound (in use, or not an address of this
    host); else the socket bound to it, for the caller to close."""
    sock = _tcp_socket(host)
    # As daphne does: connections of a previous run in TIME_WAIT do not count.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ProgRockError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _hold_free_port(held: contextlib.ExitStack, host: str = "127.0.0.1") -> int:
    """A free port of ``host``, kept bound (so no other pick returns it) until ``held`` closes."""
    sock = held.enter_context(_tcp_socket(host))
    sock.bind((host, 0))
    return int(sock.getsockname()[1])


class Stack:
    """Redis, backend, delay server, workers and web server, started and stopped together."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        workers: int = 2,
        data_dir: Path | str | None = None,
        redis_url: str | None = None,
        backend_url: str | None = None,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
        echo: bool = False,
        web_processes: int = 1,
        server: str = "daphne",
        stream: IO[str] | None = None,
        access_log: bool = False,
        settings: str = DEMO_SETTINGS,
        pythonpath: Sequence[str] | None = None,
        metrics_port: int | None = None,
        celery: str | None = None,
    ) -> None:
        for label, value, low in (("workers", workers, 1), ("web_processes", web_processes, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ProgRockError(f"{label} must be an integer >= {low}, got {value!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ProgRockError(f"port must be an integer in 0..65535, got {port!r}")
        self.host = host
        self.workers = workers
        self.web_processes = web_processes
        if server not in WEB_SERVERS:
            raise ProgRockError(f"server must be one of {', '.join(WEB_SERVERS)}, got {server!r}")
        check_web_server(server)
        self.server = server
        self.access_log = access_log
        self.settings = settings
        # A Celery worker of the project's app, with this pool (None: none).
        self.celery_argv = celery_command(sys.executable, settings, celery) if celery else None
        if pythonpath is None:
            pythonpath = [str(_CHECKOUT_EXAMPLE)] if settings == DEMO_SETTINGS else [os.getcwd()]
        self.pythonpath = [str(Path(p).resolve()) for p in pythonpath]
        self._requested_port = port
        self._tmp: str | None = None
        if data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="progrock-stack-")
            data_dir = self._tmp
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._data_lock = DataDirLock(self.data_dir)
        self.redis_url = redis_url or ""
        self.backend_url = backend_url or ""
        self._start_redis = not redis_url
        # DATABASE_URL of the Django processes; None: the project's default
        # (the demo: SQLite in the data dir), whatever this process's environment says.
        self.database_url = database_url or None
        self._start_backend = not backend_url
        self._extra_env = dict(env or {})
        self.ports: list[int] = []
        # --metrics-port of the delay server and each worker: None off, 0 free ports,
        # else consecutive ones from it (the delay server's first).
        self._metrics_port = metrics_port
        self.metrics_ports: dict[str, int] = {}
        self.supervisor = Supervisor(echo=echo, stream=stream)
        self._abort = threading.Event()
        self._started = False
        self._stopped = False

    # -- addresses ----------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self.ports:
            raise ProgRockError("the stack has no web port before start()")
        return self.ports[0]

    @property
    def urls(self) -> list[str]:
        """``http://HOST:PORT`` of every web process."""
        host = _WILDCARDS.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return [f"http://{host}:{p}" for p in self.ports]

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the (first) web process."""
        return self.urls[0] if self.ports else ""

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT/prog/`` of the (first) web process."""
        return "ws" + self.url[len("http") :] + "/prog/" if self.ports else ""

    @property
    def web_names(self) -> list[str]:
        if self.web_processes == 1:
            return ["web"]
        return [f"web-{i}" for i in range(1, self.web_processes + 1)]

    @property
    def worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(1, self.workers + 1)]

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start every process and wait until each is ready; on failure stop all and raise."""
        if self._started:
            raise ProgRockError("Stack.start() was already called")
        self._started = True
        deadline = time.monotonic() + timeout
        try:
            self._start(deadline)
        except BaseException:
            self.stop()
            raise

    def _remaining(self, deadline: float) -> float:
        return max(0.1, min(READY_TIMEOUT, deadline - time.monotonic()))

    def _start(self, deadline: float) -> None:
        sup = self.supervisor
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # One data dir, one stack (progrock.local.datalock): before anything starts.
        self._data_lock.acquire()
        # 0. The settings module imports, before anything is started.
        probe_env = self._env(django=True)
        for unknown_yet in ("REDIS_URL", "PROGROCK_BACKEND_URL"):
            if not probe_env[unknown_yet]:
                del probe_env[unknown_yet]
        check_settings(
            self.settings,
            python=sys.executable,
            env=probe_env,
            cwd=self.data_dir,
            pythonpath=self.pythonpath,
            demo=self.settings == DEMO_SETTINGS and not _CHECKOUT_EXAMPLE.is_dir(),
        )
        # Every port this stack picks is held until all are picked: a port
        # given back by one pick could come out of the next (the backend on
        # the web server's port, and the web server's readiness check then
        # answered by the backend).
        with contextlib.ExitStack() as held:
            self.ports = self._web_ports(held)
            backend_port = _hold_free_port(held) if self._start_backend else 0
            redis_port = _hold_free_port(held) if self._start_redis else 0
            self.metrics_ports = self._pick_metrics_ports(held)
        py = sys.executable
        celery = ["celery"] if self.celery_argv else []
        names = ["redis", "backend", "migrate", "delay", *self.worker_names, *self.web_names]
        names += celery
        sup.set_width(names)

        # 1. Redis, and the backend (it needs nothing else).
        if self._start_redis:
            redis = RedisServer(redis_port, data_dir=self.data_dir / "redis", persist=True)
            redis.data_dir.mkdir(parents=True, exist_ok=True)
            self.redis_url = redis.url
            cwd = str(redis.data_dir)
            sup.add(ChildSpec("redis", redis.command(), cwd=cwd, ready_check=redis.ping))
            sup.spawn("redis")
        first: list[str] = []
        if self._start_backend:
            self.backend_url = f"http://127.0.0.1:{backend_port}"
            argv = [
                *(py, "-m", "progrock.local.backend"),
                *("--host", "127.0.0.1", "--port", str(backend_port)),
                # Its tasks outlive its restarts (a crash, a kill): as a real service's would.
                *("--data", str(self.data_dir / BACKEND_FILE)),
            ]
            env = self._env(django=False)
            sup.add(
                ChildSpec("backend", argv, env=env, cwd=str(self.data_dir), ready_line=_BACKEND)
            )
            sup.spawn("backend")
            first.append("backend")
        if self._start_redis:
            sup.wait_ready(["redis"], self._remaining(deadline), self._abort)

        # 2. Migrations, beside the backend's startup.
        sup.add(self._django("migrate", ["migrate", "--noinput"], oneshot=True, restart=False))
        sup.spawn("migrate")
        sup.wait_ready(["migrate", *first], self._remaining(deadline), self._abort)
        match = sup.get("backend").ready_match if self._start_backend else None
        if match is not None:
            self.backend_url = match.group(1).rstrip("/")

        # 3. Everything Django, together.
        sup.add(
            self._django("delay", ["rundelay", *self._metrics_args("delay")], ready_line=_DELAY)
        )
        for name in self.worker_names:
            args = ["runprogrock", *self._metrics_args(name)]
            sup.add(self._django(name, args, group="worker", **_WORKER_READINESS))
        for name, port in zip(self.web_names, self.ports, strict=True):
            argv = web_command(
                self.server,
                py,
                self.host,
                port,
                access_log=self.access_log,
                application=_DEV_APPLICATION,
            )
            check = functools.partial(port_accepts, self.host, port)
            # The project's application, plus static files as runserver serves them.
            env = {**self._env(django=True), _DEV_APPLICATION_ENV: asgi_application(self.settings)}
            cwd = str(self.data_dir)
            sup.add(ChildSpec(name, argv, env=env, cwd=cwd, group="web", ready_check=check))
        if self.celery_argv:
            env = self._env(django=True)
            cwd = str(self.data_dir)
            sup.add(
                ChildSpec("celery", self.celery_argv, env=env, cwd=cwd, ready_line=CELERY_READY)
            )
        last = ["delay", *self.worker_names, *self.web_names, *celery]
        for name in last:
            sup.spawn(name)
        sup.wait_ready(last, self._remaining(deadline), self._abort)
        sup.supervise()

    def _pick_metrics_ports(self, held: contextlib.ExitStack) -> dict[str, int]:
        if self._metrics_port is None:
            return {}
        names = ["delay", *self.worker_names]
        if not self._metrics_port:
            return {name: _hold_free_port(held, self.host) for name in names}
        ports = dict(zip(names, itertools.count(self._metrics_port), strict=False))
        for port in ports.values():
            held.enter_context(check_port_free(self.host, port))
        return ports

    def _metrics_args(self, name: str) -> list[str]:
        port = self.metrics_ports.get(name)
        return [] if port is None else ["--metrics-port", f"{self.host}:{port}"]

    def _web_ports(self, held: contextlib.ExitStack) -> list[int]:
        if self._requested_port:
            # Consecutive ports from the requested one: easy to put behind a proxy.
            ports = [self._requested_port + i for i in range(self.web_processes)]
            if ports[-1] > 65535:
                raise ProgRockError(
                    f"{self.web_processes} web processes need ports {ports[0]}-{ports[-1]}"
                )
            for port in ports:
                held.enter_context(check_port_free(self.host, port))
            return ports
        return [_hold_free_port(held, self.host) for _ in range(self.web_processes)]

    def _env(self, *, django: bool) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if django:
            env["PYTHONPATH"] = os.pathsep.join(
                [*self.pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        if django:
            env.update(
                DJANGO_SETTINGS_MODULE=self.settings,
                PROGROCK_DATA_DIR=str(self.data_dir),
                REDIS_URL=self.redis_url,
                PROGROCK_BACKEND_URL=self.backend_url,
            )
            env.pop("DATABASE_URL", None)
            if self.database_url:
                env["DATABASE_URL"] = self.database_url
            if "DJANGO_ALLOWED_HOSTS" not in env and self.host not in _WILDCARDS:
                host = f"[{self.host}]" if ":" in self.host else self.host
                if host not in _LOCAL_HOSTS.split(","):
                    env["DJANGO_ALLOWED_HOSTS"] = f"{_LOCAL_HOSTS},{host}"
        env.update(self._extra_env)
        return env

    def _django(self, name: str, args: list[str], **options: Any) -> ChildSpec:
        argv = [sys.executable, "-m", "django", *args]
        return ChildSpec(name, argv, env=self._env(django=True), cwd=str(self.data_dir), **options)

    def stop(self) -> None:
        """Stop every process (reverse start order) and remove a temporary data dir."""
        if self._stopped:
            return
        self._stopped = True
        self._abort.set()
        self.supervisor.stop_all()
        self._data_lock.release()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def request_stop(self) -> None:
        """Interrupt a running :meth:`start` (safe from a signal handler)."""
        self._abort.set()

    def wait(self, stop: threading.Event) -> str | None:
        """Block until ``stop`` is set (return None) or the supervisor gave up (return why)."""
        while not stop.wait(0.2):
            if self.supervisor.failed.is_set():
                return self.supervisor.failure
        return None

    # -- control (tests, benchmarks) ----------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a child; it stays down until :meth:`restart` (no automatic restart)."""
        self.supervisor.kill(name, sig)

    def restart(self, name: str, timeout: float = 30.0) -> None:
        """Start a child again (stopping it first if it runs) and wait until it is ready."""
        self.supervisor.restart(name, timeout)

    def pids(self) -> dict[str, int]:
        """Pid of each running child, by name."""
        return self.supervisor.pids()

    def output(self, name: str) -> list[str]:
        """Recent output lines of a child (``"progrock"``: the supervisor's own lines)."""
        if name == "progrock":
            return list(self.supervisor.events)
        return list(self.supervisor.get(name).output)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- progrock up ---------------------------------------------------------------------


def add_up_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``up`` subcommand to ``progrock``'s argument parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "up",
        help="run the whole stack (Redis, backend, delay server, workers, web) in one terminal",
        description="Run Redis, the backend task service, the delay server, the workers and "
        "the web server, restart any that crashes, and stop them all on Ctrl-C.",
    )
    parser.add_argument(
        "--port", type=_port, default=8000, help="web port (0: a free one; default 8000)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="web address (default 127.0.0.1)")
    parser.add_argument(
        "--workers", type=_positive_int, default=2, help="worker processes (default 2)"
    )
    parser.add_argument(
        "--web",
        type=_positive_int,
        default=1,
        help="web processes, on consecutive ports from --port (default 1)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"database, secret key and Redis files (default {default_data_dir()})",
    )
    parser.add_argument(
        "--backend-url", default=None, help="use this backend task service instead of starting one"
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="seconds between two polls of a running task",
    )
    parser.add_argument(
        "--server",
        choices=WEB_SERVERS,
        default="daphne",
        help="ASGI server of the web processes "
        "(default daphne; uvicorn needs django-progrock[uvicorn])",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every HTTP request and WebSocket connect/disconnect of the web processes",
    )
    parser.add_argument(
        "--settings",
        default=None,
        metavar="MODULE",
        help="the Django settings module of the project to run "
        f"(default $DJANGO_SETTINGS_MODULE, else the demo's {DEMO_SETTINGS}); "
        "its ASGI application is the asgi module beside it",
    )
    parser.add_argument(
        "--pythonpath",
        action="append",
        default=None,
        metavar="DIR",
        help="a folder to import the project from (repeatable; default: the current folder, "
        "or the demo's example/ folder for the demo)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve the delay server's and the workers' Prometheus metrics on consecutive "
        "ports from PORT (0: free ones; needs django-progrock[metrics]; docs/metrics.md)",
    )
    parser.add_argument(
        "--celery",
        nargs="?",
        const="threads",
        default=None,
        choices=CELERY_POOLS,
        metavar="POOL",
        help="also run a Celery worker of the project's app (celery -A PROJECT worker) with "
        f"this pool, one of {', '.join(CELERY_POOLS)} (default threads; needs "
        "django-progrock[celery])",
    )
    parser.set_defaults(func=run_up)
    return parser


def run_up(args: argparse.Namespace) -> int:
    """Run the stack in the foreground until SIGINT/SIGTERM/SIGHUP; return the exit code."""
    env: dict[str, str] = {}
    if args.poll_interval is not None:
        env["PROGROCK_POLL_INTERVAL"] = repr(args.poll_interval)
    data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
    database_url = os.environ.get("DATABASE_URL", "").strip() or None
    redis_url = os.environ.get("REDIS_URL", "").strip() or None
    try:
        # A wrong URL: one line now, rather than children failing one after another.
        if database_url:
            check_database_url(database_url, "DATABASE_URL")
        if redis_url:
            check_redis(redis_url, "REDIS_URL")
        stack = Stack(
            port=args.port,
            host=args.host,
            workers=args.workers,
            data_dir=data_dir,
            redis_url=redis_url,
            backend_url=args.backend_url,
            database_url=database_url,
            env=env,
            echo=True,
            server=args.server,
            web_processes=args.web,
            access_log=args.access_log,
            settings=args.settings or os.environ.get("DJANGO_SETTINGS_MODULE") or DEMO_SETTINGS,
            pythonpath=args.pythonpath,
            metrics_port=args.metrics_port,
            celery=args.celery,
        )
    except (ProgRockError, OSError) as exc:
        print(f"progrock up: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    log = stack.supervisor.log

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log(f"{name} again: killing what is left")
            stack.supervisor.force()
            return
        log(f"{name}: stopping")
        stop.set()
        stack.request_stop()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        return _run(stack, stop, log)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(stack: Stack, stop: threading.Event, log: Callable[[str], None]) -> int:
    try:
        stack.start(timeout=180.0)
    except Aborted:
        log("stopped")
        return 0
    except (SettingsNotImportable, DataDirInUse) as exc:
        print(f"progrock up: {exc}", file=sys.stderr)
        return 2
    except (ProgRockError, OSError) as exc:
        print(f"progrock up: startup failed: {exc}", file=sys.stderr)
        return 1
    print(f"ProgRock is up: {stack.url}/", flush=True)
    for url in stack.urls[1:]:
        print(f"  also:    {url}/", flush=True)
    print(f"  Redis:   {stack.redis_url}", flush=True)
    print(f"  backend: {stack.backend_url}", flush=True)
    if stack.database_url:
        print(f"  database: {mask_password(stack.database_url)}", flush=True)
    print(f"  data:    {stack.data_dir}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    failure = stack.wait(stop)
    stack.stop()
    if failure:
        print(f"progrock up: {failure}; stopped everything", file=sys.stderr)
        return 1
    log("stopped")
    return 0


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value
