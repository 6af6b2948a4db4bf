"""The reference backend as the fault tests drive it: faults set on it, or killed and
started again on its task file (same port, same tasks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from progrock.local.backend.testing import BackendProcess, start_backend

FAULTS: dict[str, dict[str, Any]] = {
    "refusing": {},  # the backend process is down
    "http-500": {"status": 500},
    "garbage": {"garbage": True},
    "slow": {"delay_s": 30.0},  # beyond the adapter's timeout (5 s)
}


class Backend:
    """The stack's backend process: faults set on it, or killed and started again."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.process: BackendProcess = start_backend(extra_args=["--data", str(data)])
        self.url = self.process.url

    def fault(self, kind: str, routes: list[str] | None = None) -> None:
        if kind == "refusing":
            self.process.process.kill()
            self.process.stop()
        else:
            self.process.set_faults(routes=routes, **FAULTS[kind])

    def heal(self, kind: str) -> None:
        if kind == "refusing":
            port = self.process.port
            self.process = start_backend(port, ["--data", str(self.data)])
        else:
            self.process.clear_faults()

    def close(self) -> None:
        self.process.process.kill()  # not SIGTERM: it would wait for slow answers
        self.process.stop()
