"""The backend's in-memory task table and the thread pool that runs hash tasks.

Rock tasks hold no thread and no timer: their state is computed from the
monotonic clock when asked, which keeps the status path cheap enough for
thousands of tasks polled every 200 ms. Hash tasks run in a small
``ThreadPoolExecutor``; queued ones wait in its queue, not in threads of their
own. Finished tasks are forgotten ``ttl`` seconds after they end.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

from progrock.local.backend.kinds import (
    MB,
    HashParams,
    ParamError,
    RockParams,
    State,
    generate_stream,
    parse_params,
    rock_error,
    rock_message,
    rock_result,
    rock_view,
)

TaskDict = dict[str, Any]
Clock = Callable[[], float]


class StoreFull(Exception):
    """The table already holds ``max_tasks`` tasks (HTTP 503)."""


class _RockTask:
    __slots__ = ("_final", "cancelled", "created_at", "id", "params", "started")

    def __init__(self, task_id: str, params: RockParams, started: float, created_at: float):
        self.id = task_id
        self.params = params
        self.started = started
        self.created_at = created_at
        self.cancelled: tuple[float, float] | None = None  # (at, progress)
        self._final: tuple[TaskDict, float] | None = None  # (state, ended_at)

    def _compute(self, now: float) -> tuple[TaskDict, float | None]:
        if self._final is not None:
            return self._final
        p = self.params
        result: Any = None
        error: str | None = None
        state: State
        if self.cancelled is not None:
            ended: float | None = self.cancelled[0]
            state, progress = "cancelled", self.cancelled[1]
        else:
            view = rock_view(p, now - self.started)
            state, progress = view.state, view.progress
            ended = None if view.ended_after is None else self.started + view.ended_after
            if state == "succeeded":
                result = rock_result(p)
            elif state == "failed":
                error = rock_error(p, progress)
        task = {
            "id": self.id,
            "kind": "rock",
            "state": state,
            "progress": progress,
            "message": rock_message(progress),
            "result": result,
            "error": error,
            "created_at": self.created_at,
        }
        if ended is not None:
            self._final = (task, ended)
        return task, ended

    def view(self, now: float) -> TaskDict:
        return self._compute(now)[0]

    def ended_at(self, now: float) -> float | None:
        return self._compute(now)[1]

    def cancel(self, now: float) -> bool:
        """Cancel if running; return False if the task already ended by itself."""
        task, ended = self._compute(now)
        if ended is not None:
            return bool(task["state"] == "cancelled")
        self.cancelled = (now, task["progress"])
        return True


class _HashTask:
    __slots__ = (
        "_ended",
        "_error",
        "_lock",
        "_result",
        "_state",
        "clock",
        "created_at",
        "done_bytes",
        "future",
        "id",
        "params",
        "started",
        "stop",
    )

    def __init__(self, task_id: str, params: HashParams, clock: Clock, created_at: float):
        self.id = task_id
        self.params = params
        self.clock = clock
        self.created_at = created_at
        self.stop = threading.Event()
        self.future: Future[None] | None = None
        self.started = False
        self.done_bytes = 0
        self._lock = threading.Lock()
        self._state: State = "running"
        self._result: Any = None
        self._error: str | None = None
        self._ended: float | None = None

    def _finish(self, state: State, *, result: Any = None, error: str | None = None) -> bool:
        with self._lock:
            if self._state != "running":
                return False
            self._state, self._result, self._error = state, result, error
            self._ended = self.clock()
            return True

    def run(self) -> None:
        """Hash the stream in a pool thread; stop between chunks once cancelled."""
        if self.stop.is_set():
            return
        self.started = True
        try:
            digest = hashlib.sha256()
            rate = self.params.rate_mb_s
            begin = self.clock()
            for chunk in generate_stream(self.params.mb):
                if self.stop.is_set():
                    return
                digest.update(chunk)
                self.done_bytes += len(chunk)
                if rate is not None:
                    due = begin + self.done_bytes / (rate * MB)
                    wait = due - self.clock()
                    if wait > 0 and self.stop.wait(wait):
                        return
            self._finish(
                "succeeded", result={"sha256": digest.hexdigest(), "bytes": self.done_bytes}
            )
        except Exception as exc:  # pragma: no cover - hashing bytes does not fail
            self._finish("failed", error=f"hash failed: {type(exc).__name__}: {exc}")

    def view(self, now: float) -> TaskDict:
        with self._lock:
            state, result, error = self._state, self._result, self._error
        total = self.params.total_bytes
        done = total if state == "succeeded" else self.done_bytes
        if state == "running" and not self.started:
            message = "queued"
        else:
            message = f"hashed {done / MB:g} of {self.params.mb} MiB"
        return {
            "id": self.id,
            "kind": "hash",
            "state": state,
            "progress": 100.0 * done / total,
            "message": message,
            "result": result,
            "error": error,
            "created_at": self.created_at,
        }

    def ended_at(self, now: float) -> float | None:
        return self._ended

    def cancel(self, now: float) -> bool:
        self.stop.set()
        if self.future is not None:
            self.future.cancel()
        if self._finish("cancelled"):
            return True
        return self._state == "cancelled"


_Task = _RockTask | _HashTask


class TaskStore:
    """Every task the backend knows, by id.

    ``ttl``: seconds a finished task stays visible; ``hash_workers``: threads
    running hash tasks at once; ``max_tasks``: table size beyond which
    :meth:`create` raises :class:`StoreFull`.
    """

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        hash_workers: int = 2,
        max_tasks: int = 100_000,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if ttl < 0:
            raise ValueError(f"ttl must be >= 0 seconds, got {ttl!r}")
        if hash_workers < 1:
            raise ValueError(f"hash_workers must be >= 1, got {hash_workers!r}")
        if max_tasks < 1:
            raise ValueError(f"max_tasks must be >= 1, got {max_tasks!r}")
        self.ttl = ttl
        self.max_tasks = max_tasks
        self.clock = clock
        self.wall_clock = wall_clock
        self._tasks: dict[str, _Task] = {}
        self._keys: dict[str, str] = {}  # idempotency key -> task id
        self._pool = ThreadPoolExecutor(hash_workers, thread_name_prefix="progrock-hash")

    def __len__(self) -> int:
        return len(self._tasks)

    def by_key(self, key: str) -> TaskDict | None:
        """The task created with this idempotency key, if it is still held."""
        task_id = self._keys.get(key)
        return None if task_id is None else self.get(task_id)

    def create(self, kind: object, params: object, *, key: str | None = None) -> TaskDict:
        """Start a task; raise ParamError for a bad kind/params, StoreFull when full."""
        parsed = parse_params(kind, params)
        if len(self._tasks) >= self.max_tasks:
            self.sweep()
            if len(self._tasks) >= self.max_tasks:
                raise StoreFull(f"the backend already holds {len(self._tasks)} tasks (max_tasks)")
        task_id = uuid.uuid4().hex
        now = self.clock()
        task: _Task
        if isinstance(parsed, RockParams):
            task = _RockTask(task_id, parsed, now, self.wall_clock())
        else:
            task = _HashTask(task_id, parsed, self.clock, self.wall_clock())
            task.future = self._pool.submit(task.run)
        self._tasks[task_id] = task
        if key is not None:
            self._keys[key] = task_id
        return task.view(now)

    def get(self, task_id: str) -> TaskDict | None:
        task = self._tasks.get(task_id)
        return None if task is None else task.view(self.clock())

    def status_many(self, task_ids: Iterable[str]) -> dict[str, TaskDict | None]:
        now = self.clock()
        tasks = self._tasks
        out: dict[str, TaskDict | None] = {}
        for task_id in task_ids:
            task = tasks.get(task_id)
            out[task_id] = None if task is None else task.view(now)
        return out

    def cancel(self, task_id: str) -> tuple[Literal["cancelled", "conflict"], TaskDict] | None:
        """Cancel a task: ``None`` if unknown, ``("conflict", state)`` if it already ended."""
        task = self._tasks.get(task_id)
        if task is None:
            return None
        now = self.clock()
        outcome: Literal["cancelled", "conflict"] = "cancelled" if task.cancel(now) else "conflict"
        return outcome, task.view(now)

    def sweep(self) -> int:
        """Forget tasks that ended more than ``ttl`` seconds ago; return how many."""
        now = self.clock()
        expired = [
            task_id
            for task_id, task in self._tasks.items()
            if (ended := task.ended_at(now)) is not None and now - ended >= self.ttl
        ]
        for task_id in expired:
            del self._tasks[task_id]
        if expired:
            gone = set(expired)
            self._keys = {k: t for k, t in self._keys.items() if t not in gone}
        return len(expired)

    def close(self) -> None:
        """Stop every hash thread promptly and shut the pool down."""
        for task in self._tasks.values():
            if isinstance(task, _HashTask):
                task.stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["ParamError", "StoreFull", "TaskDict", "TaskStore"]
