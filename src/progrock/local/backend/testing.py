"""Start a real backend process for tests and benchmarks.

>>> backend = start_backend()          # python -m progrock.local.backend --port 0
>>> backend.url                        # 'http://127.0.0.1:43817'
>>> backend.set_faults(status=500)     # every task route now answers 500
>>> backend.stop()                     # SIGTERM, wait, SIGKILL if it lingers

The process binds a free port on 127.0.0.1; :func:`start_backend` returns once
it printed its readiness line, and raises (after reaping it) if it did not.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Any

from progrock.local.backend.__main__ import READY_PREFIX


class BackendStartError(RuntimeError):
    """The backend process exited or stayed silent instead of getting ready."""


class BackendProcess:
    """A running ``progrock.local.backend`` process; use :func:`start_backend` to make one."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, stderr: IO[bytes]) -> None:
        self.process = process
        self.url = url
        self._stderr = stderr
        self.port = int(url.rsplit(":", 1)[1])
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()

    def _drain_stdout(self) -> None:
        stdout = self.process.stdout
        if stdout is not None:
            for _ in stdout:
                pass

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_text(self) -> str:
        """What the process wrote to stderr so far."""
        self._stderr.flush()
        with open(self._stderr.name, "rb") as f:
            return f.read().decode(errors="replace")

    def _request(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def set_faults(
        self,
        *,
        status: int | None = None,
        delay_s: float = 0.0,
        garbage: bool = False,
        count: int | None = None,
        routes: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Inject faults into the task routes (needs ``allow_faults``); see ``POST /_faults``."""
        body: dict[str, Any] = {"status": status, "delay_s": delay_s, "garbage": garbage}
        if count is not None:
            body["count"] = count
        if routes is not None:
            body["routes"] = list(routes)
        result: dict[str, Any] = self._request("POST", "/_faults", body)
        return result

    def clear_faults(self) -> None:
        self.set_faults()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the process, wait up to ``timeout`` s, SIGKILL if needed; return its code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._drain.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()
        return self.process.returncode

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_backend(
    port: int = 0,
    extra_args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    allow_faults: bool = True,
    timeout: float = 20.0,
    env: Mapping[str, str] | None = None,
) -> BackendProcess:
    """Spawn ``python -m progrock.local.backend`` and wait for its readiness line.

    ``extra_args`` go to the command line (e.g. ``["--ttl", "1"]``); ``env``
    is added to the current environment. Raises :class:`BackendStartError`
    with the process's stderr if it is not ready within ``timeout`` seconds.
    """
    args = [sys.executable, "-m", "progrock.local.backend", "--host", host, "--port", str(port)]
    if allow_faults:
        args.append("--allow-faults")
    args.extend(extra_args)
    stderr = tempfile.NamedTemporaryFile(prefix="progrock-backend-", suffix=".log")  # noqa: SIM115
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        line = _read_line(process, timeout)
        if not line.startswith(READY_PREFIX):
            raise BackendStartError(f"unexpected first line {line!r}")
    except BackendStartError as exc:
        detail = _abort(process, stderr)
        raise BackendStartError(f"{exc} (command {args}); stderr:\n{detail}") from None
    except BaseException:
        _abort(process, stderr)
        raise
    return BackendProcess(process, line[len(READY_PREFIX) :].strip(), stderr)


def _abort(process: subprocess.Popen[bytes], stderr: IO[bytes]) -> str:
    """Kill and reap a process that failed to start; return its stderr."""
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()
    stderr.seek(0)
    detail = stderr.read().decode(errors="replace")
    stderr.close()
    return detail


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """Read the first stdout line within ``timeout`` seconds."""
    stdout = process.stdout
    if stdout is None:  # pragma: no cover - always a pipe here
        raise BackendStartError("the backend's stdout is not a pipe")
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendStartError(f"the backend printed no readiness line in {timeout} s")
            if selector.select(remaining):
                byte = os.read(stdout.fileno(), 1)
                if not byte:
                    raise BackendStartError(
                        f"the backend exited with code {process.wait()} before getting ready"
                    )
                buffer += byte
    return buffer.decode(errors="replace")
