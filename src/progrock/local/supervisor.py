"""Run child processes, prefix their output, restart crashed ones, stop them in order.

The engine behind ``progrock up`` and :class:`progrock.local.stack.Stack`; it knows
nothing about Redis or Django. Every child runs in its own session (so a
terminal's Ctrl-C reaches only the supervisor, which then stops the children in
order) and, on Linux, gets ``SIGTERM`` if the supervisor dies without cleaning
up. Children are spawned from one long-lived thread because Linux delivers that
"parent death" signal when the spawning *thread* exits.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import IO

from progrock.exceptions import ProgRockError

# Runs first in each child: ask Linux for SIGTERM when the supervisor dies, then
# exec the real command (same pid). argv: supervisor pid, program, args...
_LAUNCHER = (
    "import ctypes,os,sys\n"
    "ctypes.CDLL(None,use_errno=True).prctl(1,15)\n"
    "os.getppid()==int(sys.argv[1]) or os._exit(70)\n"
    "os.execv(sys.argv[2],sys.argv[2:])\n"
)
_USE_LAUNCHER = sys.platform.startswith("linux")

# A child that exits within this many seconds of starting counts as a fast
# crash; its restarts back off from BACKOFF_BASE to BACKOFF_MAX seconds. Once
# supervising, the supervisor never gives up on a child (a child that cannot
# reach Redis or the database exits and is retried until they are back, at
# most BACKOFF_MAX seconds after); from QUIET_AFTER fast crashes in a row, it
# stops logging each restart and says so once, then once more when the child
# stays up again.
FAST_CRASH_SECONDS = 10.0
QUIET_AFTER = 5
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
STOP_TIMEOUT = 5.0


class ChildFailed(ProgRockError):
    """A child exited or did not become ready during startup."""

    def __init__(self, name: str, reason: str, lines: Sequence[str]) -> None:
        tail = "\n".join(f"    {line}" for line in lines[-15:]) or "    (no output)"
        super().__init__(f"{name}: {reason}; its last output:\n{tail}")
        self.name = name
        self.reason = reason
        self.lines = list(lines)


class Aborted(ProgRockError):
    """Startup was interrupted by a stop request (Ctrl-C, SIGTERM)."""


@dataclass
class ChildSpec:
    """How to run one child and how to tell it is ready.

    Readiness: ``oneshot`` children are ready when they exit with 0; otherwise a
    child is ready once ``ready_line`` matched an output line (if given),
    ``ready_check()`` returned true (if given) and it has lived ``ready_after`` s.
    With ``ready_line_within``, a ``ready_line`` that has not shown up after that
    many seconds stops blocking (for a line that is nice to wait for but not vital).
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    group: str = ""
    oneshot: bool = False
    restart: bool = True
    ready_line: re.Pattern[str] | None = None
    ready_check: Callable[[], bool] | None = None
    ready_after: float = 0.0
    ready_line_within: float | None = None


@dataclass
class Child:
    """A child's live state; survives restarts (its output history too)."""

    spec: ChildSpec
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=300))
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_match: re.Match[str] | None = None
    held: bool = False
    stopping: bool = False
    reported: bool = False
    restart_at: float | None = None
    fast_crashes: int = 0
    reader: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_ready(self) -> bool:
        """Whether the current run is ready; raise :class:`ChildFailed` if it exited."""
        proc = self.process
        if proc is None:
            raise ChildFailed(self.name, "was never started", list(self.output))
        code = proc.poll()
        if self.spec.oneshot:
            if code is None:
                return False
            self._drain()
            if code == 0:
                return True
            raise ChildFailed(self.name, f"exited with {describe_exit(code)}", list(self.output))
        if code is not None:
            self._drain()
            raise ChildFailed(self.name, f"exited with {describe_exit(code)}", list(self.output))
        lived = time.monotonic() - self.started_at
        if self.spec.ready_line is not None and self.ready_match is None:
            within = self.spec.ready_line_within
            if within is None or lived < within:
                return False
        if lived < self.spec.ready_after:
            return False
        return self.spec.ready_check is None or self.spec.ready_check()

    def _drain(self) -> None:
        if self.reader is not None:
            self.reader.join(2.0)


def describe_exit(code: int) -> str:
    """``"code 1"`` or ``"signal SIGKILL"`` for a Popen return code."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


class Supervisor:
    """Start, watch, restart and stop a set of named child processes."""

    def __init__(self, *, echo: bool = True, stream: IO[str] | None = None) -> None:
        self.echo = echo
        self.stream = stream
        self.children: dict[str, Child] = {}
        # Why supervising stopped for good: nothing sets it since the supervisor
        # never gives up on a child (QUIET_AFTER); Stack.wait() still looks.
        self.failure: str | None = None
        self.failed = threading.Event()
        self._width = 8
        self._lock = threading.Lock()
        self._print_lock = threading.Lock()
        self.events: collections.deque[str] = collections.deque(maxlen=300)
        self._supervising = False
        self._stopping = False
        self._force = threading.Event()
        self._wake = threading.Event()
        self._requests: collections.deque[tuple[Child, Future[None]]] = collections.deque()
        self._closed = False
        self._done = False
        self._thread = threading.Thread(
            target=self._monitor, name="progrock-supervisor", daemon=True
        )
        self._thread.start()

    # -- output -----------------------------------------------------------------

    def set_width(self, names: Sequence[str]) -> None:
        self._width = max([8, *(len(n) for n in names)])

    def log(self, line: str, name: str = "progrock") -> None:
        """Print one prefixed line (always, even when children are not echoed)."""
        self.events.append(line)
        self._print(name, line, force=True)

    def _print(self, name: str, line: str, *, force: bool = False) -> None:
        if not (self.echo or force):
            return
        stream = self.stream if self.stream is not None else sys.stdout
        with self._print_lock:
            try:
                stream.write(f"{name:<{self._width}} | {line}\n")
                stream.flush()
            except (OSError, ValueError):  # closed or broken stdout: keep supervising
                pass

    def _read(self, child: Child, proc: subprocess.Popen[bytes]) -> None:
        pipe = proc.stdout
        if pipe is None:  # pragma: no cover - always piped
            return
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode(errors="replace").rstrip("\r\n")
                child.output.append(line)
                pattern = child.spec.ready_line
                if pattern is not None and child.ready_match is None and child.process is proc:
                    child.ready_match = pattern.search(line)
                self._print(child.name, line)

    # -- spawning (always on the monitor thread) ----------------------------------

    def add(self, spec: ChildSpec) -> Child:
        if spec.name in self.children:
            raise ProgRockError(f"child names must be unique, got {spec.name!r} twice")
        child = Child(spec)
        self.children[spec.name] = child
        return child

    def spawn(self, name: str) -> None:
        """Start (or restart) the named child; returns once the process exists."""
        child = self.get(name)
        future: Future[None] = Future()
        with self._lock:
            if self._closed:
                raise Aborted(f"cannot start {name!r}: the supervisor is stopping")
            self._requests.append((child, future))
        self._wake.set()
        future.result(timeout=30)

    def _spawn_now(self, child: Child) -> None:
        spec = child.spec
        argv = list(spec.argv)
        if _USE_LAUNCHER:
            argv = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]
        child.process = None  # the previous run's reader must no longer touch ready_match
        child.ready_match = None
        child.reported = False
        child.stopping = False
        child.restart_at = None
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(spec.env) if spec.env is not None else None,
                cwd=spec.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            child.output.append(f"cannot run {spec.argv[0]!r}: {exc}")
            reason = f"could not be started ({exc})"
            raise ChildFailed(child.name, reason, list(child.output)) from exc
        child.process = proc
        child.started_at = time.monotonic()
        child.reader = threading.Thread(
            target=self._read, args=(child, proc), name=f"progrock-{child.name}", daemon=True
        )
        child.reader.start()

    def _monitor(self) -> None:
        while True:
            self._wake.wait(0.05)
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._requests:
                        break
                    child, future = self._requests.popleft()
                    stopping = self._stopping
                try:
                    if stopping:
                        raise Aborted(f"cannot start {child.name!r}: the supervisor is stopping")
                    self._spawn_now(child)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(None)
            with self._lock:
                if self._done:
                    return
                stopping = self._stopping
            if not stopping:
                try:
                    self._check_children()
                except Exception as exc:  # keep supervising whatever happens
                    self.log(f"supervisor error: {exc!r}")

    def _check_children(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            proc = child.process
            if proc is not None and not child.reported and proc.poll() is not None:
                child.reported = True
                if not self._supervising:
                    continue  # during startup, wait_ready reports the failure
                if child.spec.oneshot or child.stopping or child.held or not child.spec.restart:
                    continue
                self._schedule_restart(child, now, proc.returncode)
            if (
                child.fast_crashes >= QUIET_AFTER
                and child.alive()
                and now - child.started_at >= FAST_CRASH_SECONDS
            ):
                self.log(
                    f"{child.name} has stayed up for {FAST_CRASH_SECONDS:g} s after "
                    f"{child.fast_crashes} fast crashes in a row"
                )
                child.fast_crashes = 0
            if child.restart_at is not None and now >= child.restart_at and not child.held:
                if child.fast_crashes < QUIET_AFTER:
                    self.log(f"restarting {child.name}")
                try:
                    self._spawn_now(child)
                except ChildFailed as exc:
                    self.log(str(exc).splitlines()[0])
                    self._schedule_restart(child, now, None)

    def _schedule_restart(self, child: Child, now: float, code: int | None) -> None:
        """Restart ``child`` after a backoff; never give up (see :data:`QUIET_AFTER`)."""
        lived = now - child.started_at
        fast = lived < FAST_CRASH_SECONDS
        child.fast_crashes = child.fast_crashes + 1 if fast else 1
        how = "could not start" if code is None else f"exited with {describe_exit(code)}"
        delay = min(BACKOFF_BASE * 2 ** (child.fast_crashes - 1), BACKOFF_MAX)
        child.restart_at = now + delay
        if child.fast_crashes < QUIET_AFTER:
            self.log(
                f"{child.name} {how} after {lived:.1f} s (unexpected); restarting in {delay:g} s"
                + (f" (fast crash {child.fast_crashes} in a row)" if fast else "")
            )
        elif child.fast_crashes == QUIET_AFTER:
            self.log(
                f"{child.name} {how} after {lived:.1f} s: {child.fast_crashes} crashes in a row, "
                f"each within {FAST_CRASH_SECONDS:g} s of starting (is Redis or the database "
                f"down?); restarting it every {BACKOFF_MAX:g} s at most, without a line per "
                "restart, until it stays up"
            )

    # -- readiness --------------------------------------------------------------

    def wait_ready(
        self, names: Sequence[str], timeout: float, abort: threading.Event | None = None
    ) -> None:
        """Wait until every named child is ready; raise :class:`ChildFailed` or :class:`Aborted`."""
        deadline = time.monotonic() + timeout
        pending = [self.get(n) for n in names]
        while pending:
            if abort is not None and abort.is_set():
                raise Aborted("startup interrupted")
            failures: list[ChildFailed] = []
            waiting: list[Child] = []
            for child in pending:
                try:
                    if not child.is_ready():
                        waiting.append(child)
                except ChildFailed as exc:
                    failures.append(exc)
            if failures:
                first = failures[0]
                if len(failures) > 1:
                    others = ", ".join(f.name for f in failures[1:])
                    first.args = (f"{first.args[0]}\n(also failed: {others})",)
                raise first
            pending = waiting
            if not pending:
                return
            if time.monotonic() >= deadline:
                child = pending[0]
                raise ChildFailed(child.name, f"not ready after {timeout:g} s", list(child.output))
            time.sleep(0.05)

    # -- control ----------------------------------------------------------------

    def get(self, name: str) -> Child:
        try:
            return self.children[name]
        except KeyError:
            raise ProgRockError(
                f"no child named {name!r}; expected one of {sorted(self.children)}"
            ) from None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a child's process group and hold it: it is not restarted until asked."""
        child = self.get(name)
        child.held = True
        child.restart_at = None
        if child.process is not None and child.process.poll() is None:
            _signal_group(child.process.pid, sig)

    def restart(self, name: str, timeout: float = 30.0) -> None:
        """Stop the child if it runs, start it again and wait until it is ready."""
        child = self.get(name)
        child.held = True
        child.restart_at = None
        self._stop_children([child], STOP_TIMEOUT)
        child.fast_crashes = 0
        self.spawn(name)
        child.held = False
        self.wait_ready([name], timeout)

    def supervise(self) -> None:
        """From now on, restart children that exit unexpectedly (startup is over)."""
        self._supervising = True

    def pids(self) -> dict[str, int]:
        return {n: c.process.pid for n, c in self.children.items() if c.process and c.alive()}

    def force(self) -> None:
        """Cut a running :meth:`stop_all` short: SIGKILL what is left now."""
        self._force.set()

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every child, group by group in reverse order of first start."""
        with self._lock:
            self._stopping = True
            self._closed = True
        groups: dict[str, list[Child]] = {}
        for child in self.children.values():
            groups.setdefault(child.spec.group or child.name, []).append(child)
        for members in reversed(list(groups.values())):
            self._stop_children(members, timeout)
        # Only now may the spawning thread end: Linux sends the children their
        # parent-death signal when it does.
        with self._lock:
            self._done = True
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)

    def _stop_children(self, children: Sequence[Child], timeout: float) -> None:
        running = [c for c in children if c.process is not None and c.process.poll() is None]
        for child in running:
            child.stopping = True
            if child.process is not None:
                _signal_group(child.process.pid, signal.SIGTERM)
                _signal_group(child.process.pid, signal.SIGCONT)  # in case it was stopped
        deadline = time.monotonic() + timeout
        for child in running:
            proc = child.process
            if proc is None:
                continue
            while proc.poll() is None and time.monotonic() < deadline and not self._force.is_set():
                time.sleep(0.02)
            if proc.poll() is None:
                self.log(f"{child.name} did not stop within {timeout:g} s: killing it")
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        for child in running:
            if child.process is not None:
                # Leftover members of the group (e.g. a forked helper) go too.
                _signal_group(child.process.pid, signal.SIGKILL)
            child._drain()


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid`` (every child leads its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
