"""Fixtures for the backend tests: a real ``progrock.local.backend`` process and an adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from progrock.local.backend.testing import BackendProcess, start_backend
from progrock.services.http import HttpTaskService


@pytest.fixture(scope="session")
def backend_process() -> Iterator[BackendProcess]:
    """One backend process (``--port 0``, faults allowed) shared by the session."""
    backend = start_backend()
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture
def backend(backend_process: BackendProcess) -> Iterator[BackendProcess]:
    """The shared backend, with no faults before and after the test."""
    backend_process.clear_faults()
    yield backend_process
    if backend_process.process.poll() is None:
        backend_process.clear_faults()


@pytest.fixture
async def service(backend: BackendProcess) -> AsyncIterator[HttpTaskService]:
    """An HttpTaskService pointed at the shared backend, closed after the test."""
    svc = HttpTaskService(backend.url, timeout=5.0)
    yield svc
    await svc.aclose()


@pytest.fixture
async def backend_url_service(backend: BackendProcess) -> AsyncIterator[HttpTaskService]:
    """An HttpTaskService with batch_size 2, so batch polls span several chunks."""
    svc = HttpTaskService(backend.url, timeout=5.0, batch_size=2)
    yield svc
    await svc.aclose()
