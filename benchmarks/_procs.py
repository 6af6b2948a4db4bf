"""Child processes for the benchmarks: spawn, reap, and measure CPU and memory.

Every child runs in its own session so that stopping it also stops whatever
it started; :class:`Sampler` sums CPU time and RSS over a process and all its
descendants (``psutil``), remembering processes that come and go.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil


def raise_fd_limit(wanted: int = 65_536) -> int:
    """Raise this process's open-file soft limit toward ``wanted``; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


@dataclass
class Child:
    """One process we started, with its role in the stack and its log file."""

    role: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM the child's process group, then SIGKILL whatever is left."""
        try:
            family = [psutil.Process(self.pid), *psutil.Process(self.pid).children(recursive=True)]
        except psutil.Error:
            family = []
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Descendants that left the group (their own sessions) are stopped by pid.
        leftovers = [p for p in family[1:] if p.is_running()]
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, still = psutil.wait_procs(leftovers, timeout=3)
        for proc in still:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


def spawn(
    role: str,
    argv: list[str],
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdout_pipe: bool = False,
    stdin_pipe: bool = False,
) -> Child:
    """Start ``argv`` in a new session, its output going to ``log_dir/<role>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{role}.log"
    log = log_path.open("ab")
    popen = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE if stdout_pipe else log,
        stderr=log,
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    return Child(role=role, popen=popen, log_path=log_path, _log=log)


_KINDS = (
    ("progrock.local.backend", "backend"),
    ("rundelay", "delay"),
    ("runworker", "worker"),
    ("runprogrock", "worker"),
    ("daphne", "web"),
    ("uvicorn", "web"),
    ("redis-server", "redis"),
    ("migrate", "migrate"),
)


def _kind(cmdline: str) -> str:
    """Name a descendant process by what its command line runs."""
    for needle, kind in _KINDS:
        if needle in cmdline:
            return kind
    return "other"


@dataclass
class _Seen:
    role: str
    name: str
    base_cpu: float
    last_cpu: float
    peak_rss: int = 0


@dataclass
class Sampler:
    """Samples CPU seconds and RSS of process trees, by role, in a background thread."""

    roots: dict[str, int]
    interval: float = 0.25
    _seen: dict[int, _Seen] = field(default_factory=dict)
    _peak_role_rss: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _machine0: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def start(self) -> None:
        """Take the starting CPU times (only CPU used from now on counts) and begin sampling."""
        self._machine0 = (_machine_busy(), time.monotonic(), os.getloadavg()[0])
        self._sample(baseline=True)
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(baseline=False)

    def _sample(self, *, baseline: bool) -> None:
        with self._lock:
            for role, pid in self.roots.items():
                try:
                    root = psutil.Process(pid)
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                role_rss = 0
                for proc in tree:
                    try:
                        with proc.oneshot():
                            times = proc.cpu_times()
                            cpu = times.user + times.system
                            rss = proc.memory_info().rss
                            name = " ".join(proc.cmdline()[:6])[:160]
                    except psutil.Error:
                        continue
                    seen = self._seen.get(proc.pid)
                    if seen is None:
                        sub = role if proc.pid == pid else f"{role}/{_kind(name)}"
                        seen = _Seen(sub, name, cpu if baseline else 0.0, cpu)
                        self._seen[proc.pid] = seen
                    seen.last_cpu = max(seen.last_cpu, cpu)
                    seen.peak_rss = max(seen.peak_rss, rss)
                    role_rss += rss
                self._peak_role_rss[role] = max(self._peak_role_rss.get(role, 0), role_rss)

    def stop(self) -> dict[str, Any]:
        """Stop sampling; return per-role and per-process CPU seconds and peak RSS (MB)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample(baseline=False)
        roles: dict[str, dict[str, float]] = {}
        procs: list[dict[str, Any]] = []
        for pid, seen in sorted(self._seen.items()):
            cpu = max(0.0, seen.last_cpu - seen.base_cpu)
            role = roles.setdefault(seen.role, {"cpu_s": 0.0, "peak_rss_mb": 0.0})
            role["cpu_s"] += cpu
            procs.append(
                {
                    "role": seen.role,
                    "pid": pid,
                    "cmd": seen.name,
                    "cpu_s": round(cpu, 3),
                    "peak_rss_mb": round(seen.peak_rss / 2**20, 1),
                }
            )
        for name, peak in self._peak_role_rss.items():
            roles.setdefault(name, {"cpu_s": 0.0, "peak_rss_mb": 0.0})["peak_rss_mb"] = round(
                peak / 2**20, 1
            )
        for role in roles.values():
            role["cpu_s"] = round(role["cpu_s"], 3)
        busy0, t0, load0 = self._machine0
        machine = {
            # Every process on the machine, ours or not: compare with the stack's
            # CPU to see whether something else was competing for the cores.
            "busy_cpu_s": round(_machine_busy() - busy0, 3),
            "wall_s": round(time.monotonic() - t0, 3),
            "loadavg_1m_start": round(load0, 2),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        }
        return {"roles": roles, "processes": procs, "machine": machine}


def _machine_busy() -> float:
    """CPU seconds all cores of the machine spent not idle, since boot."""
    times = psutil.cpu_times()
    # guest time is already inside user; steal is the hypervisor's, not ours.
    fields = ("user", "nice", "system", "irq", "softirq")
    return float(sum(getattr(times, name, 0.0) for name in fields))


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until it is true; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
