"""HttpTaskService: the TaskService adapter for a backend speaking ``docs/backend.md``.

One shared ``aiohttp.ClientSession`` (created lazily inside the running event
loop, so connections are pooled across polls); status polls use the batch
endpoint ``POST /tasks/status`` in chunks of ``batch_size`` sent concurrently, and
so do creates (``POST /tasks/batch``, where the backend has it).
Connection errors, timeouts, 5xx and non-JSON answers raise
:class:`~progrock.exceptions.ServiceError`; a 4xx on create raises
:class:`~progrock.exceptions.ServiceRejected`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from progrock.exceptions import ImproperlyConfigured, ServiceError, ServiceRejected
from progrock.services.base import CreateRequest, ServiceStatus, parse_status

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
"""Most ids (tasks) the reference backend accepts in one ``POST /tasks/status``
(``POST /tasks/batch``)."""

BATCH_RETRY_S = 300
"""Seconds creates go one by one after the backend refused ``POST /tasks/batch``
with a 4xx other than 408 and 429 (a backend without the route, a proxy's
body limit); then it is tried again."""


class HttpTaskService:
    """Talk to a backend task service over HTTP.

    ``url``: the backend's base URL (``http://127.0.0.1:8001``); ``timeout``:
    seconds allowed for one whole HTTP exchange; ``batch_size``: most refs
    per ``POST /tasks/status``, and most creates per ``POST /tasks/batch``
    (1..1000).
    """

    def __init__(self, url: str, timeout: float = 5.0, batch_size: int = 500) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ImproperlyConfigured(f"HttpTaskService url must be an http(s) URL, got {url!r}")
        if not urlsplit(url).hostname:
            raise ImproperlyConfigured(f"HttpTaskService url has no host: {url!r}")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ImproperlyConfigured(
                f"HttpTaskService timeout must be a positive number of seconds, got {timeout!r}"
            )
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= MAX_BATCH
        ):
            raise ImproperlyConfigured(
                f"HttpTaskService batch_size must be an integer within 1..{MAX_BATCH}, "
                f"got {batch_size!r}"
            )
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.batch_size = batch_size
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._no_batch_until = 0.0  # monotonic time until which creates go one by one

    def __repr__(self) -> str:
        return (
            f"HttpTaskService(url={self.url!r}, timeout={self.timeout}, "
            f"batch_size={self.batch_size})"
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ServiceError(f"HttpTaskService for {self.url} is closed")
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session belongs to one loop; a new loop (e.g. a new test) gets its own.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=100),
                json_serialize=json.dumps,
            )
            self._loop = loop
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        absent_ok: bool = False,
    ) -> tuple[int, Any, str]:
        """One exchange: return (status, decoded JSON, "METHOD /path") or raise ServiceError.

        5xx and non-JSON bodies raise; 2xx-4xx come back for the caller to judge.
        ``absent_ok``: a 4xx comes back (with None) whatever its body, for a
        route the backend may not have or may refuse (a proxy's HTML page).
        """
        what = f"{method} {path}"
        session = self._get_session()
        try:
            async with session.request(
                method, self.url + path, json=body if body is not None else None
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise ServiceError(
                f"backend {self.url} timed out after {self.timeout:g} s on {what}"
            ) from None
        except aiohttp.ClientError as exc:
            raise ServiceError(
                f"backend {self.url} unreachable on {what}: {type(exc).__name__}: {exc}"
            ) from exc
        if absent_ok and 400 <= status < 500:
            return status, None, what
        text = raw[:300].decode(errors="replace")
        if status >= 500:
            raise ServiceError(f"backend {self.url} answered {status} to {what}: {text!r}")
        try:
            data = json.loads(raw)
        except ValueError:
            raise ServiceError(
                f"backend {self.url} answered {status} with non-JSON to {what}: {text!r}"
            ) from None
        return status, data, what

    def _detail(self, status: int, data: Any, what: str) -> str:
        return f"backend {self.url} answered {status} to {what}: {self._reason(data)}"

    @staticmethod
    def _reason(data: Any) -> str:
        error = data.get("error") if isinstance(data, dict) else None
        return error if isinstance(error, str) else json.dumps(data)[:300]

    def _rejected(self, status: int, data: Any, what: str) -> ServiceRejected:
        # The detail reaches browsers (failed.error.detail): the backend's own
        # reason only, without its URL; the log line has the full context.
        logger.info("%s", self._detail(status, data, what))
        return ServiceRejected(self._reason(data), status)

    def _parse(self, data: Any, what: str, expected_ref: str | None = None) -> ServiceStatus:
        try:
            return parse_status(data, expected_ref=expected_ref)
        except ServiceError as exc:
            raise ServiceError(f"backend {self.url} sent a bad task to {what}: {exc}") from None

    async def create(
        self, kind: str, params: Mapping[str, Any], *, key: str | None = None
    ) -> ServiceStatus:
        body: dict[str, Any] = {"kind": kind, "params": params}
        if key is not None:
            body["idempotency_key"] = key
        status, data, what = await self._call("POST", "/tasks", body)
        if 400 <= status < 500:
            raise self._rejected(status, data, what)
        if status != 201 and status != 200:
            raise ServiceError(self._detail(status, data, what))
        return self._parse(data, what)

    async def create_many(
        self, requests: Sequence[CreateRequest]
    ) -> list[ServiceStatus | ServiceError | ServiceRejected]:
        """Create many tasks with ``POST /tasks/batch`` (chunks of ``batch_size``).

        One entry per request, in order, as :meth:`create` would return or
        raise it; a chunk whose whole call failed (a 5xx, a 408 or 429, no
        answer) gives each of its entries that ServiceError. A chunk the
        backend refuses as a whole with another 4xx (no such route, a
        proxy's body limit, whatever the body) is created one ``POST /tasks``
        per task instead (the idempotency keys make that safe), and so is
        every create for the next :data:`BATCH_RETRY_S` seconds; then the
        batch route is tried again.
        """
        if not requests:
            return []
        step = self.batch_size
        chunks = [requests[i : i + step] for i in range(0, len(requests), step)]
        if time.monotonic() < self._no_batch_until:
            answers: list[object] = [None] * len(chunks)
        else:
            answers = list(
                await asyncio.gather(
                    *(self._create_chunk(chunk) for chunk in chunks), return_exceptions=True
                )
            )
        singles = [i for i, answer in enumerate(answers) if answer is None]
        if singles:
            each = await asyncio.gather(*(self._create_each(chunks[i]) for i in singles))
            for i, created in zip(singles, each, strict=True):
                answers[i] = created
        out: list[ServiceStatus | ServiceError | ServiceRejected] = []
        for chunk, outcome in zip(chunks, answers, strict=True):
            if isinstance(outcome, ServiceError):
                out.extend(outcome for _ in chunk)
            elif isinstance(outcome, list):
                out.extend(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        return out

    async def _create_each(
        self, requests: Sequence[CreateRequest]
    ) -> list[ServiceStatus | ServiceError | ServiceRejected]:
        """One ``POST /tasks`` per request, concurrently."""
        singles = await asyncio.gather(
            *(self.create(kind, params, key=key) for kind, params, key in requests),
            return_exceptions=True,
        )
        out: list[ServiceStatus | ServiceError | ServiceRejected] = []
        for single in singles:
            if isinstance(single, (ServiceStatus, ServiceError, ServiceRejected)):
                out.append(single)
            else:
                raise single
        return out

    async def _create_chunk(
        self, requests: Sequence[CreateRequest]
    ) -> list[ServiceStatus | ServiceError | ServiceRejected] | None:
        """One ``POST /tasks/batch``; None if the backend refused it as a whole (a 4xx)."""
        body = {
            "tasks": [
                {"kind": kind, "params": params}
                if key is None
                else {"kind": kind, "params": params, "idempotency_key": key}
                for kind, params, key in requests
            ]
        }
        status, data, what = await self._call("POST", "/tasks/batch", body, absent_ok=True)
        if status in (408, 429):  # busy, not a verdict on the route: retried later
            raise ServiceError(f"backend {self.url} answered {status} to {what}")
        if 400 <= status < 500:
            # No such route (404, 405), or a refusal of the batch as a whole
            # (a proxy's body limit, ...): no verdict on the tasks themselves.
            if time.monotonic() >= self._no_batch_until:
                logger.warning(
                    "backend %s answered %d to %s; creating tasks one by one for %d s",
                    self.url,
                    status,
                    what,
                    BATCH_RETRY_S,
                )
            self._no_batch_until = time.monotonic() + BATCH_RETRY_S
            return None
        if status != 200:
            raise ServiceError(self._detail(status, data, what))
        entries = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(entries, list) or len(entries) != len(requests):
            raise ServiceError(
                f"backend {self.url} answered {what} without a 'tasks' list of "
                f"{len(requests)} entries: {json.dumps(data)[:300]}"
            )
        return [self._create_entry(entry, what) for entry in entries]

    def _create_entry(
        self, entry: Any, what: str
    ) -> ServiceStatus | ServiceError | ServiceRejected:
        code = entry.get("status") if isinstance(entry, dict) else None
        if isinstance(code, bool) or not isinstance(code, int):
            return ServiceError(
                f"backend {self.url} sent a batch entry without an integer 'status' to "
                f"{what}: {json.dumps(entry)[:300]}"
            )
        if 400 <= code < 500:
            return self._rejected(code, entry, what)
        if code not in (200, 201):
            return ServiceError(self._detail(code, entry, what))
        try:
            return self._parse(entry.get("task"), what)
        except ServiceError as exc:
            return exc

    async def status_many(
        self, refs: Sequence[str]
    ) -> dict[str, ServiceStatus | ServiceError | None]:
        unique = list(dict.fromkeys(refs))
        if not unique:
            return {}
        chunks = [unique[i : i + self.batch_size] for i in range(0, len(unique), self.batch_size)]
        answers = await asyncio.gather(
            *(self._status_chunk(chunk) for chunk in chunks), return_exceptions=True
        )
        out: dict[str, ServiceStatus | ServiceError | None] = {}
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            out.update(answer)
        return out

    async def _status_chunk(
        self, refs: list[str]
    ) -> dict[str, ServiceStatus | ServiceError | None]:
        status, data, what = await self._call("POST", "/tasks/status", {"ids": refs})
        if status != 200:
            raise ServiceError(self._detail(status, data, what))
        tasks = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(tasks, dict):
            raise ServiceError(
                f"backend {self.url} answered {what} without a 'tasks' object: "
                f"{json.dumps(data)[:300]}"
            )
        out: dict[str, ServiceStatus | ServiceError | None] = {}
        for ref in refs:
            if ref not in tasks:
                out[ref] = ServiceError(f"backend {self.url} left task {ref!r} out of {what}")
                continue
            entry = tasks[ref]
            if entry is None:
                out[ref] = None
                continue
            try:
                out[ref] = self._parse(entry, what, expected_ref=ref)
            except ServiceError as exc:
                out[ref] = exc
        return out

    async def cancel(self, ref: str) -> ServiceStatus | None:
        status, data, what = await self._call("DELETE", f"/tasks/{quote(ref, safe='')}")
        if status == 404:
            return None
        if status == 409 and isinstance(data, dict) and "task" in data:
            return self._parse(data["task"], what, expected_ref=ref)
        if 400 <= status < 500:
            raise self._rejected(status, data, what)
        if status != 200:
            raise ServiceError(self._detail(status, data, what))
        return self._parse(data, what, expected_ref=ref)

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
