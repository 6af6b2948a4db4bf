"""The backend's aiohttp application: routes, JSON errors and fault injection.

The API is specified in ``docs/backend.md``. Every answer is JSON; every error
is ``{"error": "..."}`` quoting the bad value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from progrock.local.backend.kinds import KINDS, ParamError
from progrock.local.backend.store import StoreFull, TaskStore

MAX_BATCH = 1000
"""Most ids one ``POST /tasks/status`` may ask about."""

FAULT_ROUTES = frozenset({"create", "get", "cancel", "status"})


@dataclass(slots=True)
class Faults:
    """Failures injected into the task routes (``POST /_faults``); off by default.

    ``delay_s`` delays the answer, then ``status`` replaces it with that HTTP
    status, or ``garbage`` replaces it with a 200 that is not JSON. ``count``
    faults only that many requests, then everything is cleared. ``routes``
    limits the faults to some of ``create`` (``POST /tasks`` and
    ``POST /tasks/batch``), ``get``, ``cancel``, ``status``.
    """

    status: int | None = None
    delay_s: float = 0.0
    garbage: bool = False
    count: int | None = None
    routes: frozenset[str] = field(default=FAULT_ROUTES)

    @property
    def active(self) -> bool:
        return self.status is not None or self.delay_s > 0 or self.garbage

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["routes"] = sorted(self.routes)
        return data


def parse_faults(obj: object) -> Faults:
    """Validate a ``POST /_faults`` body; raise ParamError quoting the bad field."""
    if not isinstance(obj, dict):
        raise ParamError(f"faults must be an object, got {type(obj).__name__}: {obj!r}")
    unknown = sorted(set(obj) - {"status", "delay_s", "garbage", "count", "routes"})
    if unknown:
        raise ParamError(
            f"unknown fault fields {unknown}; expected some of "
            "['count', 'delay_s', 'garbage', 'routes', 'status']"
        )
    status = obj.get("status")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599
    ):
        raise ParamError(f"fault 'status' must be null or an integer 400..599, got {status!r}")
    delay = obj.get("delay_s", 0.0)
    if (
        isinstance(delay, bool)
        or not isinstance(delay, (int, float))
        or not math.isfinite(delay)
        or delay < 0
    ):
        raise ParamError(f"fault 'delay_s' must be a number >= 0, got {delay!r}")
    garbage = obj.get("garbage", False)
    if not isinstance(garbage, bool):
        raise ParamError(f"fault 'garbage' must be a boolean, got {garbage!r}")
    count = obj.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ParamError(f"fault 'count' must be null or an integer >= 1, got {count!r}")
    routes = obj.get("routes", sorted(FAULT_ROUTES))
    if not isinstance(routes, list) or not set(routes) <= FAULT_ROUTES or not routes:
        raise ParamError(
            f"fault 'routes' must be a non-empty list of {sorted(FAULT_ROUTES)}, got {routes!r}"
        )
    return Faults(status, float(delay), garbage, count, frozenset(routes))


@dataclass(slots=True)
class FaultSwitch:
    """The faults in force (mutable: the app itself is frozen once it runs)."""

    current: Faults


STORE = web.AppKey("store", TaskStore)
FAULTS = web.AppKey("faults", FaultSwitch)
ALLOW_FAULTS = web.AppKey("allow_faults", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"request body is not valid JSON ({exc}): {raw[:200]!r}"}),
            content_type="application/json",
        ) from None


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's plain-text HTTP errors (404, 405, 413, ...) into JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        reason = exc.text or exc.reason
        if exc.status == 404:
            reason = f"no route for {request.method} {request.path!r}"
        elif exc.status == 405:
            reason = f"method {request.method} not allowed on {request.path!r}"
        return _error(exc.status, reason)


def _faulty(route: str) -> Callable[[Handler], Handler]:
    """Apply the injected faults, if any, before running the route's handler."""

    def wrap(handler: Handler) -> Handler:
        async def faulted(request: web.Request) -> web.StreamResponse:
            switch = request.app[FAULTS]
            faults = switch.current
            if not faults.active or route not in faults.routes:
                return await handler(request)
            if faults.count is not None:
                faults.count -= 1
                if faults.count <= 0:
                    switch.current = Faults()
            if faults.delay_s > 0:
                await asyncio.sleep(faults.delay_s)
            if faults.status is not None:
                return _error(faults.status, f"injected fault: status {faults.status}")
            if faults.garbage:
                return web.Response(text="<html>injected garbage</html>", content_type="text/html")
            return await handler(request)

        return faulted

    return wrap


def _create_one(store: TaskStore, body: object) -> tuple[int, dict[str, Any]]:
    """One create request: ``(status, task state or {"error": reason})``."""
    if not isinstance(body, dict):
        return 400, {"error": f"body must be an object, got {type(body).__name__}: {body!r:.200}"}
    unknown = sorted(set(body) - {"kind", "params", "idempotency_key"})
    if unknown:
        return 400, {
            "error": f"unknown fields {unknown}; expected 'kind', 'params' and 'idempotency_key'"
        }
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
        return 400, {
            "error": f"idempotency_key must be a string of 1 to 200 characters, got {key!r:.250}"
        }
    if key is not None:
        existing = store.by_key(key)
        if existing is not None:  # a retried create: the same task again
            return 200, existing
    try:
        return 201, store.create(body.get("kind"), body.get("params"), key=key)
    except ParamError as exc:
        return 400, {"error": str(exc)}
    except StoreFull as exc:
        return 503, {"error": str(exc)}


@_faulty("create")
async def create_task(request: web.Request) -> web.StreamResponse:
    status, answer = _create_one(request.app[STORE], await _body(request))
    return _json(answer, status)


@_faulty("create")
async def create_batch(request: web.Request) -> web.StreamResponse:
    """Many creates in one exchange: each entry answered as ``POST /tasks`` would."""
    body = await _body(request)
    items = body.get("tasks") if isinstance(body, dict) else None
    if not isinstance(items, list) or set(body) != {"tasks"}:
        return _error(400, f"body must be {{'tasks': [create requests]}}, got {body!r:.200}")
    if len(items) > MAX_BATCH:
        return _error(400, f"at most {MAX_BATCH} tasks per call, got {len(items)}")
    store = request.app[STORE]
    answers = []
    for item in items:
        status, answer = _create_one(store, item)
        entry = {"status": status, "task": answer} if status < 400 else {"status": status, **answer}
        answers.append(entry)
    return _json({"tasks": answers})


@_faulty("get")
async def get_task(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    task = request.app[STORE].get(task_id)
    if task is None:
        return _error(404, f"unknown task {task_id!r}")
    return _json(task)


@_faulty("cancel")
async def cancel_task(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    outcome = request.app[STORE].cancel(task_id)
    if outcome is None:
        return _error(404, f"unknown task {task_id!r}")
    verdict, task = outcome
    if verdict == "conflict":
        return _error(409, f"task {task_id!r} already {task['state']}; cannot cancel", task=task)
    return _json(task)


@_faulty("status")
async def batch_status(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        return _error(400, f"body must be {{'ids': [task ids]}}, got {body!r:.200}")
    if len(ids) > MAX_BATCH:
        return _error(400, f"at most {MAX_BATCH} ids per call, got {len(ids)}")
    for task_id in ids:
        if not isinstance(task_id, str):
            return _error(400, f"ids must be strings, got {type(task_id).__name__}: {task_id!r}")
    return _json({"tasks": request.app[STORE].status_many(ids)})


async def list_kinds(request: web.Request) -> web.StreamResponse:
    return _json({"kinds": KINDS})


async def health(request: web.Request) -> web.StreamResponse:
    return _json({"ok": True, "tasks": len(request.app[STORE])})


async def get_faults(request: web.Request) -> web.StreamResponse:
    if not request.app[ALLOW_FAULTS]:
        return _error(404, "fault injection is disabled; start the backend with --allow-faults")
    return _json(request.app[FAULTS].current.to_json())


async def set_faults(request: web.Request) -> web.StreamResponse:
    if not request.app[ALLOW_FAULTS]:
        return _error(404, "fault injection is disabled; start the backend with --allow-faults")
    try:
        faults = parse_faults(await _body(request))
    except ParamError as exc:
        return _error(400, str(exc))
    request.app[FAULTS].current = faults
    return _json(faults.to_json())


def make_app(
    store: TaskStore | None = None,
    *,
    faults: Faults | None = None,
    allow_faults: bool = False,
    sweep_interval: float | None = None,
) -> web.Application:
    """Build the backend application around ``store`` (a fresh one by default).

    ``allow_faults`` enables ``/_faults``; ``faults`` are active from the start.
    Finished tasks are swept every ``sweep_interval`` seconds (default: a
    fraction of the store's TTL, at most 30 s).
    """
    store = store if store is not None else TaskStore()
    app = web.Application(middlewares=[_json_errors])
    app[STORE] = store
    app[FAULTS] = FaultSwitch(faults if faults is not None else Faults())
    app[ALLOW_FAULTS] = allow_faults
    interval = sweep_interval or min(30.0, max(0.05, store.ttl / 2))

    async def sweeper(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                store.sweep()

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().run_in_executor(None, store.close)

    app.cleanup_ctx.append(sweeper)
    app.router.add_post("/tasks", create_task)
    app.router.add_post("/tasks/batch", create_batch)
    app.router.add_post("/tasks/status", batch_status)
    app.router.add_get("/tasks/{task_id}", get_task)
    app.router.add_delete("/tasks/{task_id}", cancel_task)
    app.router.add_get("/kinds", list_kinds)
    app.router.add_get("/health", health)
    app.router.add_get("/_faults", get_faults)
    app.router.add_post("/_faults", set_faults)
    return app
